"""`python -m cpt.analysis.collect <multirun folder>`: a sweep as two tidy tables.

- `runs.csv`: one row per job: `run` (its folder), `status` (finished, failed, unfinished), the
  Hydra overrides as columns, then the summary: final and initial validation loss per domain,
  stability-gap metrics per domain, tokens (total and per source), steps, wall time, and for a
  failed job its error.
- `curves.csv`: the long table (run, step, tokens, domain, metric, value) of every validation,
  stability-gap and per-source training curve.
Failed and unfinished jobs are listed, never dropped. `--wandb entity/project/group` builds the same
run table from the wandb API instead, for runs that happened elsewhere (needs network and a key).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path
from typing import Any

import yaml

CURVE_PREFIXES = ("val/", "stability_gap/", "train/")


def find_jobs(folder: Path) -> list[Path]:
    """Every Hydra job folder (it holds `.hydra/overrides.yaml`) below `folder`, in job order."""
    jobs = [p.parent.parent for p in folder.glob("**/.hydra/overrides.yaml")]
    return sorted(jobs, key=lambda p: (_job_number(p), str(p)))


def _job_number(path: Path) -> int:
    head = path.name.split("_", 1)[0]
    return int(head) if head.isdigit() else 1 << 30


def parse_overrides(job: Path) -> dict[str, Any]:
    values = {}
    for override in yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text()) or []:
        key, _, value = override.lstrip("+~").partition("=")
        if key.startswith("hydra.") or key in ("output_dir", "data.dir"):
            continue
        try:
            values[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            values[key] = value
        if isinstance(values[key], (dict, list)):
            values[key] = json.dumps(values[key])
    return values


def flatten_summary(summary: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for key in ("steps", "tokens", "wall_time_s", "parameters", "init"):
        if key in summary:
            row[key] = summary[key]
    for domain, loss in summary.get("final_val_loss", {}).items():
        row[f"final_loss/{domain}"] = loss
    for domain, loss in summary.get("initial_val_loss", {}).items():
        row[f"initial_loss/{domain}"] = loss
    for source, tokens in summary.get("tokens_per_source", {}).items():
        row[f"tokens/{source}"] = tokens
    for source, weight in summary.get("mixture", {}).items():
        row[f"weight/{source}"] = weight
    for domain, metrics in summary.get("stability_gap", {}).items():
        for key, value in metrics.items():
            row[f"gap/{domain}/{key}"] = value
    return row


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
        row.update(flatten_summary(json.loads((job / "summary.json").read_text())))
    return row, read_curves(job, row["run"])


def read_curves(job: Path, run: str) -> list[dict[str, Any]]:
    metrics = job / "metrics.csv"
    if not metrics.is_file():
        return []
    out, tokens = [], 0.0
    with metrics.open(newline="") as handle:
        for record in csv.DictReader(handle):
            if record.get("train/tokens"):
                tokens = float(record["train/tokens"])
            step = int(record["step"])
            for key, value in record.items():
                if not value or not key.startswith(CURVE_PREFIXES) or key.count("/") != 2:
                    continue
                kind, domain, metric = key.split("/")
                if kind == "stability_gap" and metric != "loss":
                    continue  # the gap's metrics, logged once at the end: in runs.csv instead
                name = {
                    "val": metric,
                    "stability_gap": f"gap_{metric}",
                    "train": f"train_{metric}",
                }[kind]
                out.append(
                    {
                        "run": run,
                        "step": step,
                        "tokens": tokens,
                        "domain": domain,
                        "metric": name,
                        "value": float(value),
                    }
                )
    return out


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
    return target / "runs.csv", target / "curves.csv", runs


def collect_wandb(path: str, out: str | Path) -> Path:
    """`entity/project/group` -> runs.csv from the wandb API (summary metrics and config)."""
    import wandb

    entity, project, group = path.split("/", 2)
    rows = []
    for run in wandb.Api().runs(f"{entity}/{project}", filters={"group": group}):
        row = {"run": run.name, "status": run.state}
        row.update({k: v for k, v in run.config.items() if not isinstance(v, dict)})
        row.update({k: v for k, v in run.summary.items() if isinstance(v, (int, float, str))})
        rows.append(row)
    target = Path(out)
    target.mkdir(parents=True, exist_ok=True)
    write_csv(rows, target / "runs.csv", ["run", "status"])
    return target / "runs.csv"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
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
    if args.wandb:
        print(f"wrote {collect_wandb(args.wandb, args.out or '.')}")
        return
    if not args.folder:
        parser.error("a multirun folder is needed (or --wandb)")
    runs_csv, curves_csv, runs = collect(args.folder, args.out)
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
