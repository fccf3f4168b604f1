"""`Health`: what a long run's dashboard needs to see that training is sound, at the logging
interval (`trainer.log_every_n_steps`), in `metrics.csv` and wandb:

- `train/grad_norm`: the global L2 norm of the gradients before clipping (after unscaling, under
  fp16), and `train/grad_clipped` (1 when it exceeded `trainer.gradient_clip_val`, which then
  scaled the gradients down to it);
- `train/param_norm/<group>` and `train/update_norm/<group>`: the L2 norm of the weights after the
  step and of what the step changed, per AdamW group (`decay`: matrices and embeddings;
  `no_decay`: biases and norm gains). The update norm keeps one copy of the weights (this
  process's shards) from before the step until after it, on logging steps only.

It only reads: a run with it trains bitwise as one without. The loss-side signals live in the
module (`train/z_loss` with `model.z_loss`, `train/spikes` with `optim.on_spike`).
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch.distributed.tensor import DTensor

from cpt.callbacks.base import CPTCallback, expect
from cpt.module import local

GROUP_NAMES = ("decay", "no_decay")  # the order of `cpt.models.norms.weight_decay_groups`


def group_name(index: int) -> str:
    return GROUP_NAMES[index] if index < len(GROUP_NAMES) else f"group{index}"


def logging_now(trainer: L.Trainer) -> bool:
    """Whether Lightning writes this optimizer step's logged values (its own rule, read where it
    keeps it: the same answer in every hook of the step)."""
    return bool(trainer._logger_connector.should_update_logs)


class Health(CPTCallback):
    def __init__(self, update_norms: bool = True) -> None:
        expect(
            isinstance(update_norms, bool), "callbacks.health.update_norms", "a bool", update_norms
        )
        self.update_norms = update_norms
        self._before: list[list[torch.Tensor]] | None = None
        self.last: dict[str, float] = {}

    @torch.no_grad()
    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any
    ) -> None:
        if not logging_now(trainer):
            return
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        norm = _norms(pl_module, [grads])[0] if grads else 0.0
        pl_module.log("train/grad_norm", norm)
        self.last["grad_norm"] = norm
        clip = trainer.gradient_clip_val
        if clip and trainer.gradient_clip_algorithm in (None, "norm"):
            pl_module.log("train/grad_clipped", float(norm > clip))
        if self.update_norms:
            self._before = [
                [local(p).detach().clone() for p in g["params"]] for g in optimizer.param_groups
            ]

    @torch.no_grad()
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self._before is None:
            return
        groups = trainer.optimizers[0].param_groups
        params = [[local(p).detach() for p in g["params"]] for g in groups]
        updates = [
            [p - b for p, b in zip(group, before)] for group, before in zip(params, self._before)
        ]
        self._before = None
        norms = _norms(pl_module, params + updates)
        for i in range(len(groups)):
            for kind, value in (("param_norm", norms[i]), ("update_norm", norms[len(groups) + i])):
                pl_module.log(f"train/{kind}/{group_name(i)}", value)
                self.last[f"{kind}/{group_name(i)}"] = value

    def summary(self) -> dict[str, Any]:
        return {"health": dict(self.last)} if self.last else {}


def _norms(pl_module: L.LightningModule, groups: list[list[torch.Tensor]]) -> list[float]:
    """The L2 norm of each list of tensors, whole over processes when they are shards (FSDP);
    a replicated tensor (DDP) counts once."""
    sharded = any(isinstance(p, DTensor) for p in pl_module.parameters())
    squares = torch.stack(
        [
            torch.stack([local(t).float().pow(2).sum() for t in group]).sum()
            if group
            else torch.zeros((), device=pl_module.device)
            for group in groups
        ]
    ).double()
    if sharded:
        squares = pl_module.trainer.strategy.reduce(squares.to(pl_module.device), reduce_op="sum")
    return [float(s) ** 0.5 for s in squares]
