"""`python -m cpt.analysis.sync <multirun folder>` (`make sync SWEEP=...`): upload a sweep's offline
wandb runs, saying which were already uploaded.

Every job of a sweep run without an API key wrote an offline wandb run
(`<job>/wandb/offline-run-*`). This runs `wandb sync` on each one not yet uploaded (`wandb sync`
leaves a `.synced` file beside a run's log once it is) and reports per run: its name, what it
holds, and `synced`, `already synced` or the failure. `--dry-run` only lists. Bad input (no such
folder, no offline run in it, no API key) is one line, exit status 2, before anything is uploaded.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from cpt.analysis.wandb_files import offline_runs, read_run
from cpt.errors import UserError, reported


class SyncError(UserError, ValueError):
    """Nothing can be synced: one line, exit status 2."""


def plan(folder: str | Path) -> list[tuple[Path, str, bool]]:
    """(run folder, run name, already synced) for every offline run below `folder`."""
    root = Path(folder)
    if not root.is_dir():
        raise SyncError(
            f"{root}: no such folder; expected a multirun folder (outputs/multirun/...)"
        )
    runs = offline_runs(root)
    if not runs:
        raise SyncError(f"{root}: no offline wandb run in it (<job>/wandb/offline-run-*)")
    found = []
    for run in runs:
        offline = read_run(run, header_only=True)  # the name: no need to parse its history
        found.append((run, offline.name or run.name, offline.synced))
    return found


def sync(folder: str | Path, dry_run: bool = False) -> list[tuple[str, str]]:
    """(run name, outcome) per offline run; uploads the ones not yet synced."""
    from cpt.results.loggers import wandb_api_key_configured

    runs = plan(folder)
    if not dry_run and not wandb_api_key_configured():
        raise SyncError("no wandb API key; set WANDB_API_KEY or run `wandb login`, then sync again")
    outcomes = []
    for run, name, synced in runs:
        if synced:
            outcomes.append((name, "already synced"))
            continue
        if dry_run:
            outcomes.append((name, "to sync"))
            continue
        result = subprocess.run(
            [sys.executable, "-m", "wandb", "sync", str(run)], capture_output=True, text=True
        )
        last = (result.stderr or result.stdout).strip().splitlines()[-1:] or [""]
        outcomes.append((name, "synced" if result.returncode == 0 else f"failed: {last[0]}"))
    return outcomes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m cpt.analysis.sync",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("folder", help="a multirun folder (or one job's folder)")
    parser.add_argument("--dry-run", action="store_true", help="list the runs, upload nothing")
    args = parser.parse_args(argv)
    with reported():
        outcomes = sync(args.folder, args.dry_run)
    for name, outcome in outcomes:
        print(f"{name}: {outcome}")
    failed = sum(o.startswith("failed") for _, o in outcomes)
    print(f"{len(outcomes)} runs, {failed} failed")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
