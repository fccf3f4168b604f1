"""Test-only callbacks, named by `_target_` in a test's overrides (also in child processes)."""

from __future__ import annotations

import lightning as L
import torch


class NaNOnRank(L.Callback):
    """The first block of one rank outputs NaN for one optimizer step: a non-finite loss there."""

    def __init__(self, rank: int = 1, step: int = 1) -> None:
        self.rank, self.step, self._hook = rank, step, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_rank == self.rank and trainer.global_step == self.step and not self._hook:
            block = pl_module.model.layers[0]
            self._hook = block.register_forward_hook(lambda m, i, out: out * torch.nan)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._hook is not None and trainer.global_step > self.step:
            self._hook.remove()
            self._hook = None
