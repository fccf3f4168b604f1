"""The names of a run's results as columns: one place for `runs.csv` and the wandb run.

`python -m cpt.analysis.collect` (a sweep folder, or `--wandb`) and the wandb run summary use these
functions, so a column of the tidy table and a key of the wandb runs table are the same string:
`final/val/<domain>/loss`, `initial/val/<domain>/loss`, `forgetting/<domain>` (final minus initial),
`gap/<domain>/<metric>` (`peak`, `peak_step`, `recovery_step`, `area`, ...), `tokens/<source>`,
`weight/<source>`, `initial/task/<task>/<metric>`, `final/task/<task>/<metric>`,
`task_gap/<task>/<metric>/<key>`, and every Hydra override as its own dotted key
(`optim.max_lr`).
"""

from __future__ import annotations

import json
from typing import Any

import yaml

SCALARS = ("steps", "tokens", "wall_time_s", "parameters", "init", "skipped_steps")
RENAMED = {"gap_area": "area"}
SKIPPED_OVERRIDES = ("output_dir", "data.dir")


def recorded(override: str) -> bool:
    """Whether an override describes the run (not Hydra's own settings, nor where it writes):
    the one filter for columns, wandb config keys and tags."""
    key = str(override).lstrip("+~").partition("=")[0]
    return not (key.startswith(("hydra.", "hydra/")) or key in SKIPPED_OVERRIDES)


def overrides_as_columns(overrides: list[str]) -> dict[str, Any]:
    """Hydra overrides (`key=value` strings, as `.hydra/overrides.yaml` holds them) as columns;
    Hydra's own and the output paths are left out (`recorded`), lists and dicts become JSON
    text."""
    values: dict[str, Any] = {}
    for override in filter(recorded, overrides):
        key, _, value = str(override).lstrip("+~").partition("=")
        try:
            values[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            values[key] = value
        if isinstance(values[key], (dict, list)):
            values[key] = json.dumps(values[key])
    return values


def summary_columns(summary: dict[str, Any]) -> dict[str, Any]:
    """`summary.json` as flat columns."""
    row: dict[str, Any] = {k: summary[k] for k in SCALARS if k in summary}
    final, initial = summary.get("final_val_loss", {}), summary.get("initial_val_loss", {})
    for domain, loss in final.items():
        row[f"final/val/{domain}/loss"] = loss
    for domain, loss in initial.items():
        row[f"initial/val/{domain}/loss"] = loss
    for domain in final:
        if domain in initial:
            row[f"forgetting/{domain}"] = final[domain] - initial[domain]
    for source, tokens in summary.get("tokens_per_source", {}).items():
        row[f"tokens/{source}"] = tokens
    for source, weight in summary.get("mixture", {}).items():
        row[f"weight/{source}"] = weight
    for domain, metrics in summary.get("stability_gap", {}).items():
        for key, value in metrics.items():
            row[f"gap/{domain}/{RENAMED.get(key, key)}"] = value
    for when in ("initial", "final"):
        for name, value in summary.get(f"{when}_tasks", {}).items():
            row[f"{when}/task/{name}"] = value
    for name, metrics in summary.get("task_gap", {}).items():
        for key, value in metrics.items():
            row[f"task_gap/{name}/{RENAMED.get(key, key)}"] = value
    return row
