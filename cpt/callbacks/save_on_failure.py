"""`SaveOnFailure`: the one place that writes a checkpoint when a run stops early.

- **SIGTERM** (a scheduler's pre-emption or `scancel`): Lightning turns it into an exception at the
  end of the current step on every rank; this callback writes `checkpoints/last.ckpt` (atomically)
  with the state after that step, so the job can be requeued and continue with `resume=auto`.
  SLURM's time-limit warning (USR2 with `--signal`) stops the run the same way and then requeues
  its job (`cpt/scale/requeue.py`).
- **A non-finite loss** (`optim.on_nonfinite=stop`): the module raises before the optimizer step,
  so the weights are still the last good ones; they go to `checkpoints/nonfinite-stepNNNNNNN.ckpt`
  and the error names that file. A loss spike (`optim.on_spike=stop`) the same way, to
  `checkpoints/spike-stepNNNNNNN.ckpt`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException

from cpt.callbacks.base import CPTCallback
from cpt.module import NonFiniteLossError

log = logging.getLogger(__name__)


class SaveOnFailure(CPTCallback):
    def __init__(self, dirpath: str | None = None) -> None:
        self.dirpath = dirpath
        self.saved: Path | None = None

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        folder = Path(self.dirpath or Path(trainer.default_root_dir) / "checkpoints")
        if isinstance(exception, SIGTERMException):
            self.saved = folder / "last.ckpt"
            trainer.save_checkpoint(self.saved)
            log.warning(
                "SIGTERM at step %d: saved %s; continue with resume=auto",
                trainer.global_step,
                self.saved,
            )
        elif isinstance(exception, NonFiniteLossError):
            self.saved = folder / f"{exception.kind}-step{exception.step:07d}.ckpt"
            trainer.save_checkpoint(self.saved)
            exception.saved = self.saved  # the error's one line names the file
