"""Logger factories: wandb goes offline by itself when no API key is configured."""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger


def wandb_api_key_configured() -> bool:
    """True when `WANDB_API_KEY` is set or `wandb login` wrote the key into ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def hydra_job() -> dict[str, Any]:
    """Name, group and tags of the current Hydra job; empty outside one."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hydra = HydraConfig.get()
    except (ImportError, ValueError):
        return {}
    overrides = [
        o for o in hydra.overrides.task if not o.startswith(("hydra.", "output_dir", "data.dir"))
    ]
    job: dict[str, Any] = {"tags": [o[:64] for o in overrides]}
    if hydra.job.override_dirname:
        job["name"] = hydra.job.override_dirname
    if hydra.mode == RunMode.MULTIRUN:
        job["group"] = Path(hydra.sweep.dir).name
        job["name"] = f"{hydra.job.num}:{job.get('name', '')}"
    return job


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
