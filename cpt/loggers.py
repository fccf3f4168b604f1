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


def wandb_logger(
    project: str,
    save_dir: str,
    name: str | None = None,
    group: str | None = None,
    tags: list[str] | None = None,
    mode: str | None = None,
    **kwargs: Any,
) -> WandbLogger:
    """A WandbLogger writing under `save_dir`; `mode=None` means online only with a key."""
    mode = (
        mode
        or os.environ.get("WANDB_MODE")
        or ("online" if wandb_api_key_configured() else "offline")
    )
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    return WandbLogger(
        project=project,
        save_dir=save_dir,
        name=name,
        group=group,
        tags=list(tags or []),
        mode=mode,
        **kwargs,
    )
