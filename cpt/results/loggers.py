"""Logger factories: wandb goes offline by itself when no API key is configured."""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger

from cpt.results.columns import overrides_as_columns, recorded, summary_columns
from cpt.results.naming import short_dirname


def wandb_api_key_configured() -> bool:
    """True when `WANDB_API_KEY` is set or `wandb login` wrote the key into ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def job_overrides() -> list[str]:
    """The current Hydra job's overrides (as `.hydra/overrides.yaml` holds them); [] outside one."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except (ImportError, ValueError):
        return []


def hydra_job() -> dict[str, Any]:
    """Name, group and tags of the current Hydra job; empty outside one.

    In a multirun the name is the job's folder (`3_max_lr=0.002,fraction=0.25`: what the sweep
    varies, `cpt/results/naming.py`), the same string as the `run` column of `python -m
    cpt.analysis.collect`; the group is the sweep's folder; every override is a tag."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hydra = HydraConfig.get()
    except (ImportError, ValueError):
        return {}
    overrides = [o for o in hydra.overrides.task if recorded(o)]
    job: dict[str, Any] = {"tags": [o[:64] for o in overrides]}
    if hydra.job.override_dirname:
        job["name"] = short_dirname(hydra.job.override_dirname)
    if hydra.mode == RunMode.MULTIRUN:
        job["group"] = Path(hydra.sweep.dir).name
        job["name"] = Path(hydra.runtime.output_dir).name
    return job


def run_config(resolved: dict[str, Any]) -> dict[str, Any]:
    """The config a logger records: the resolved config, plus the job's overrides as a list
    (`overrides`) and each as a top-level key (`optim.max_lr`), so that a runs table sorts and
    plots the swept values directly and `collect --wandb` rebuilds the same columns."""
    overrides = job_overrides()
    columns = overrides_as_columns(overrides)  # a group choice (`callbacks=[...]`) stays nested
    return {
        **resolved,
        **{k: v for k, v in columns.items() if k not in resolved},
        "overrides": overrides,
    }


def publish_summary(loggers: list[Any], summary: dict[str, Any]) -> None:
    """`summary.json` into the wandb run summary: flat keys named as the tidy table's columns
    (`cpt/results/columns.py`), and the whole of it as `cpt_summary` for `collect --wandb`."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.experiment.summary.update({**summary_columns(summary), "cpt_summary": summary})


def wandb_logger(
    project: str,
    save_dir: str,
    name: str | None = None,
    group: str | None = None,
    tags: list[str] | None = None,
    mode: str | None = None,
    **kwargs: Any,
) -> WandbLogger:
    """A WandbLogger writing under `save_dir`; `mode=None` means online only with a key.

    Inside a Hydra job, `name` defaults to the job's overrides, `group` to the multirun's sweep
    folder, and the overrides become tags, so that a sweep reads well in wandb.
    """
    mode = (
        mode
        or os.environ.get("WANDB_MODE")
        or ("online" if wandb_api_key_configured() else "offline")
    )
    job = hydra_job()
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    return WandbLogger(
        project=project,
        save_dir=save_dir,
        name=name or job.get("name"),
        group=group or job.get("group"),
        tags=list(tags or []) + job.get("tags", []),
        mode=mode,
        **kwargs,
    )
