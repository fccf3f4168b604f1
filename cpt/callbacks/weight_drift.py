"""`WeightDrift`: how far each module has moved from its starting weights, and when.

Logs `drift/<module>` = ||w - w0|| / ||w0|| over the module's parameters every `every` steps, at the
granularity of `depth` name components (e.g. depth 3: `layers.7.attention`), so it shows which
modules move during continual pre-training (cf. "Does Continual Learning Equally Forget All
Parameters?"). The last values go into `drift` for `summary.json`. The starting weights are kept
on the CPU.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import lightning as L
import torch
from torch.distributed.tensor import DTensor

from cpt.callbacks.base import CPTCallback, expect, is_count
from cpt.module import local


class WeightDrift(CPTCallback):
    def __init__(self, every: int = 50, depth: int = 3) -> None:
        expect(is_count(every), "callbacks.weight_drift.every", "a step count >= 1", every)
        expect(is_count(depth), "callbacks.weight_drift.depth", "a count >= 1", depth)
        self.every, self.depth = every, depth
        self._start: dict[str, torch.Tensor] = {}
        self.drift: dict[str, float] = {}

    def group(self, name: str) -> str:
        return ".".join(name.split(".")[: self.depth])

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = {
            n: local(p).detach().to("cpu", torch.float32, copy=True)
            for n, p in pl_module.model.named_parameters()
        }
        self.measure(pl_module)

    @torch.no_grad()
    def measure(self, pl_module: L.LightningModule) -> dict[str, float]:
        """Every rank calls this; under FSDP each sums its own shards and the sums are added up
        (a copy held by several ranks scales both sums alike, so the ratios are exact)."""
        moved, norm = defaultdict(float), defaultdict(float)
        sharded = False
        for name, param in pl_module.model.named_parameters():
            start = self._start[name]
            sharded |= isinstance(param, DTensor)
            moved[self.group(name)] += float((local(param).float().cpu() - start).pow(2).sum())
            norm[self.group(name)] += float(start.pow(2).sum())
        groups = list(moved)
        if sharded:
            sums = torch.tensor([[moved[g], norm[g]] for g in groups], dtype=torch.float64)
            sums = pl_module.trainer.strategy.reduce(sums.to(pl_module.device), reduce_op="sum")
            moved = {g: float(sums[i, 0]) for i, g in enumerate(groups)}
            norm = {g: float(sums[i, 1]) for i, g in enumerate(groups)}
        self.drift = {g: (moved[g] / norm[g]) ** 0.5 if norm[g] > 0 else 0.0 for g in groups}
        return self.drift

    def summary(self) -> dict[str, Any]:
        """The callback protocol: what this callback adds to `summary.json`."""
        return {"weight_drift": self.drift}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.global_step % self.every == 0 or trainer.global_step == trainer.max_steps:
            drift = self.measure(pl_module)
            for logger in trainer.loggers:
                logger.log_metrics(
                    {f"drift/{g}": v for g, v in drift.items()}, step=trainer.global_step
                )
