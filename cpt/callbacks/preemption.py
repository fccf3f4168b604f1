"""`Preemption`: on SIGTERM (a scheduler's pre-emption or `scancel`), save a checkpoint and stop.

Lightning turns SIGTERM into an exception at the end of the current step on every rank; this
callback then writes `checkpoints/last.ckpt` (atomically) with the state after that step, so the
job can be requeued and continue with `resume=auto`. SLURM's time-limit signal (SIGUSR1 with
`--signal`) is Lightning's own auto-requeue, which restores its `hpc_ckpt_*.ckpt` the same way.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)


class Preemption(L.Callback):
    def __init__(self, dirpath: str | None = None) -> None:
        self.dirpath = dirpath
        self.saved: Path | None = None

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if not isinstance(exception, SIGTERMException):
            return
        folder = Path(self.dirpath or Path(trainer.default_root_dir) / "checkpoints")
        self.saved = folder / "last.ckpt"
        trainer.save_checkpoint(self.saved)
        log.warning(
            "SIGTERM at step %d: saved %s; continue with resume=auto",
            trainer.global_step,
            self.saved,
        )
