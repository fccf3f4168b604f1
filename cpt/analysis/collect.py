"""`python -m cpt.analysis.collect <multirun folder>`: a sweep as two tidy tables.

- `runs.csv`: one row per job: `run` (its folder), `status` (finished, failed, unfinished), the
  Hydra overrides as columns, then the summary (`cpt/results/columns.py`): final and initial validation
  loss and forgetting per domain, stability-gap metrics per domain, task scores, tokens (total and
  per source), steps, wall time, and for a failed job its error.
- `sweep.json`: the keys the sweep varies (from its `multirun.yaml`), which label the figures;
- `runs_by_seed.csv` when `seed` is one of them: one row per grid point, every result's mean,
  standard deviation and 95 % interval over the seeds (`cpt/analysis/seeds.py`).
- `curves.csv`: the long table (run, step, tokens, domain, metric, value) of every validation,
  stability-gap and per-source training curve, and of every task metric in the loop (`domain` is
  then the task, `metric` is `task_<metric>`, e.g. `task_acc_norm`).
Failed and unfinished jobs are listed, never dropped. `--wandb entity/project/group` builds the same
two tables from the wandb API instead, for runs that happened elsewhere (needs network and a key);
the column names are `cpt/results/columns.py`'s, which the wandb run summary uses too.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from cpt.analysis.seeds import SEED, by_seed
from cpt.errors import UserError, exit_with
from cpt.results.columns import overrides_as_columns, summary_columns
from cpt.results.naming import swept_keys

CURVE_PREFIXES = ("val/", "stability_gap/", "train/", "task/")


def find_jobs(folder: Path) -> list[Path]:
    """Every Hydra job folder (it holds `.hydra/overrides.yaml`) below `folder`, in job order."""
    jobs = [p.parent.parent for p in folder.glob("**/.hydra/overrides.yaml")]
    return sorted(jobs, key=lambda p: (_job_number(p), str(p)))


def _job_number(path: Path) -> int:
    head = path.name.split("_", 1)[0]
    return int(head) if head.isdigit() else 1 << 30


def parse_overrides(job: Path) -> dict[str, Any]:
    return overrides_as_columns(
        yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text()) or []
    )


def collect_job(job: Path, root: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    row: dict[str, Any] = {"run": str(job.relative_to(root)) if job != root else job.name}
    if (job / "summary.json").is_file():
        row["status"] = "finished"
    elif (job / "error.txt").is_file():
        row["status"] = "failed"
        row["error"] = (job / "error.txt").read_text().strip().splitlines()[-1][:500]
    else:
        row["status"] = "unfinished"
    row.update(parse_overrides(job))
    if row["status"] == "finished":
        row.update(summary_columns(json.loads((job / "summary.json").read_text())))
    return row, read_curves(job, row["run"])


def read_curves(job: Path, run: str) -> list[dict[str, Any]]:
    metrics = job / "metrics.csv"
    if not metrics.is_file():
        return []
    with metrics.open(newline="") as handle:
        return curves_from_records(csv.DictReader(handle), run)


def curves_from_records(records: Iterable[dict[str, Any]], run: str) -> list[dict[str, Any]]:
    """The long curves table from logged rows: `metrics.csv`'s (strings, `step`) or wandb's
    history (numbers, `trainer/global_step`)."""
    out, tokens = [], 0.0
    for record in records:
        if _present(record.get("train/tokens")):
            tokens = float(record["train/tokens"])
        step = record.get("step", record.get("trainer/global_step"))
        if not _present(step):
            continue
        for key, value in sorted(record.items()):  # a row's keys: CSV column or wandb order
            if not _present(value) or not key.startswith(CURVE_PREFIXES) or key.count("/") != 2:
                continue
            kind, domain, metric = key.split("/")
            if kind == "stability_gap" and metric != "loss":
                continue  # the gap's metrics, logged once at the end: in runs.csv instead
            name = {
                "val": metric,
                "stability_gap": f"gap_{metric}",
                "train": f"train_{metric}",
                "task": f"task_{metric}",  # `domain` is then the task: task/<task>/<metric>
            }
            out.append(
                {
                    "run": run,
                    "step": int(float(step)),
                    "tokens": tokens,
                    "domain": domain,
                    "metric": name[kind],
                    "value": float(value),
                }
            )
    return out


def _present(value: Any) -> bool:
    return (
        value is not None and value != "" and not (isinstance(value, float) and math.isnan(value))
    )


def write_csv(rows: list[dict[str, Any]], path: Path, first: list[str]) -> None:
    columns = list(first)
    for row in rows:
        columns += [k for k in row if k not in columns]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
            )


def collect(
    folder: str | Path, out: str | Path | None = None
) -> tuple[Path, Path, list[dict[str, Any]]]:
    """Write `runs.csv` and `curves.csv` for the sweep in `folder` (into `out`, default `folder`)."""
    root = Path(folder)
    jobs = find_jobs(root)
    if not jobs:
        raise FileNotFoundError(f"{root}: no Hydra job folders (with .hydra/overrides.yaml) found")
    runs, curves = [], []
    for job in jobs:
        row, job_curves = collect_job(job, root)
        runs.append(row)
        curves += job_curves
    target = Path(out) if out else root
    target.mkdir(parents=True, exist_ok=True)
    write_csv(runs, target / "runs.csv", ["run", "status"])
    write_csv(curves, target / "curves.csv", ["run", "step", "tokens", "domain", "metric", "value"])
    declared = swept_keys(str(root))  # what the figures label every line by
    swept = sorted(declared) if declared is not None else None
    (target / "sweep.json").write_text(json.dumps({"swept": swept}) + "\n")
    if swept and SEED in swept:  # seeds: one row per grid point with mean, std, 95 % interval
        import pandas as pd

        by_seed(pd.read_csv(target / "runs.csv"), swept).to_csv(
            target / "runs_by_seed.csv", index=False
        )
    return target / "runs.csv", target / "curves.csv", runs


STATES = {"finished": "finished", "failed": "failed", "crashed": "failed", "killed": "failed"}


class WandbInputError(UserError, ValueError):
    """A wandb group that cannot be read: one line, exit status 2."""


def collect_wandb(
    path: str, out: str | Path, api: Any = None
) -> tuple[Path, Path, list[dict[str, Any]]]:
    """`entity/project/group` -> the same `runs.csv` and `curves.csv` as a sweep folder gives:
    the overrides from each run's `overrides` config key, the summary columns from its
    `cpt_summary`, the curves from its history (`cpt.results.loggers` records all three)."""
    parts = path.split("/")
    if len(parts) != 3 or not all(parts):
        raise WandbInputError(f"--wandb: expected entity/project/group, got {path!r}")
    found = group_runs(*parts, api=api)
    rows, curves = [], []
    for run in sorted(found, key=lambda r: (_job_number(Path(r.name)), r.name)):
        row: dict[str, Any] = {"run": run.name, "status": STATES.get(run.state, "unfinished")}
        row.update(overrides_as_columns(run.config.get("overrides") or []))
        summary = run.summary.get("cpt_summary")
        if row["status"] == "finished" and summary:
            row.update(summary_columns(dict(summary)))
        rows.append(row)
        curves += curves_from_records(run.scan_history(), run.name)
    target = Path(out)
    target.mkdir(parents=True, exist_ok=True)
    write_csv(rows, target / "runs.csv", ["run", "status"])
    write_csv(curves, target / "curves.csv", ["run", "step", "tokens", "domain", "metric", "value"])
    return target / "runs.csv", target / "curves.csv", rows


def group_runs(
    entity: str, project: str, group: str, api: Any = None, flag: str = "--wandb"
) -> list[Any]:
    """The wandb runs of a sweep's group (`flag`: the option named in the one-line errors)."""
    try:
        api = api or _api()
    except WandbInputError as err:
        raise WandbInputError(f"{flag}: {err}") from None
    try:
        found = list(api.runs(f"{entity}/{project}", filters={"group": group}))
    except Exception as err:  # wandb raises its CommError or a ValueError for a missing project
        raise WandbInputError(
            f"{flag}: project {entity}/{project} cannot be read ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else 'no such project'})"
        ) from None
    if not found:
        raise WandbInputError(f"{flag}: group {group!r} of {entity}/{project} has no runs")
    return found


def _api() -> Any:
    from cpt.results.loggers import wandb_api_key_configured

    if not wandb_api_key_configured():
        raise WandbInputError(
            "no wandb API key; set WANDB_API_KEY or run `wandb login` (the local tables "
            "need none: collect <multirun folder>)"
        )
    import wandb

    return wandb.Api()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m cpt.analysis.collect",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "folder", nargs="?", help="a multirun folder (outputs/multirun/<date>/<time>)"
    )
    parser.add_argument(
        "--out", default=None, help="where to write the tables (default: the folder)"
    )
    parser.add_argument(
        "--wandb", default=None, metavar="ENTITY/PROJECT/GROUP", help="read a wandb group instead"
    )
    args = parser.parse_args(argv)
    if not args.folder and not args.wandb:
        parser.error("a multirun folder is needed (or --wandb)")
    try:
        if args.wandb:
            runs_csv, curves_csv, runs = collect_wandb(args.wandb, args.out or ".")
        else:
            runs_csv, curves_csv, runs = collect(args.folder, args.out)
    except (UserError, FileNotFoundError) as err:
        exit_with(err)
    by_status: dict[str, int] = {}
    for row in runs:
        by_status[row["status"]] = by_status.get(row["status"], 0) + 1
    print(
        f"{len(runs)} runs ({', '.join(f'{n} {s}' for s, n in by_status.items())}) -> {runs_csv}, {curves_csv}"
    )
    for row in runs:
        if row["status"] != "finished":
            print(f"  {row['status']}: {row['run']}  {row.get('error', '')}")


if __name__ == "__main__":
    main()
