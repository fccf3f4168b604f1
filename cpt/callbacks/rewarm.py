"""`Rewarm`: owns the LR schedule and the optimizer state at the start of continual pre-training.

Every optimizer step it sets every parameter group's LR to `schedule(step)` (the module logs it as
`train/lr`); the schedule is a pure function of the step, so a resumed run needs no scheduler state.
At the start of CPT (a fresh run, not a resume) the optimizer state is:
- `fresh`: new Adam moments, what Gupta et al. and Ibrahim et al. did;
- `load`: the upstream run's Adam moments and step counts, when the `init=ckpt:` checkpoint has
  them (this run's LR, weight decay, betas and eps stay);
- `warm`: `warm_steps` steps at LR 0 fill Adam's moments without moving the weights, then the
  schedule starts (re-warming from step `warm_steps`).
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

from cpt import schedules
from cpt.callbacks.base import CPTCallback, expect, is_count
from cpt.run.geometry import BatchGeometry

log = logging.getLogger(__name__)
OPTIMIZER_STATES = ("fresh", "load", "warm")


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, DictConfig) else value


class Rewarm(CPTCallback):
    def __init__(
        self,
        schedule: dict[str, Any],
        max_lr: float,
        optimizer_state: str = "fresh",
        warm_steps: int = 0,
        init: str = "scratch",
    ) -> None:
        if optimizer_state not in OPTIMIZER_STATES:
            raise ValueError(
                f"optimizer_state {optimizer_state!r} unknown; expected one of {OPTIMIZER_STATES}"
            )
        key = "callbacks.rewarm"
        expect(init == "scratch" or str(init).startswith(("hf:", "ckpt:")), f"{key}.init",
               "scratch, hf:<...> or ckpt:<...> (the run's init)", init)  # fmt: skip
        expect(max_lr > 0, f"{key}.max_lr", "a positive learning rate", max_lr)
        expect(is_count(warm_steps, 0), f"{key}.warm_steps", "a step count >= 0", warm_steps)
        expect(
            warm_steps == 0 or optimizer_state == "warm", f"{key}.warm_steps",
            "0 unless optimizer_state=warm (it has nothing to act on)", warm_steps,
        )  # fmt: skip
        expect(
            optimizer_state != "load" or str(init).startswith("ckpt:"), f"{key}.optimizer_state",
            "fresh or warm without a cpt checkpoint to load it from (init=ckpt:...)",
            optimizer_state,
        )  # fmt: skip
        spec = _plain(schedule)
        self.spec = (
            spec if isinstance(spec, schedules.ScheduleSpec) else schedules.ScheduleSpec(**spec)
        )
        self.max_lr = max_lr
        self.optimizer_state = optimizer_state
        self.warm_steps = warm_steps if optimizer_state == "warm" else 0
        self.init = init
        self._schedule: schedules.Schedule | None = None
        self.geometry: BatchGeometry | None = None

    def build(self, geometry: BatchGeometry) -> None:
        """Bind the schedule to the run's geometry; a phase that does not fit fails here."""
        total_steps = geometry.max_steps
        if self.warm_steps >= total_steps:
            raise ValueError(
                f"warm_steps: {self.warm_steps} leave no step of the run ({total_steps})"
            )
        self._schedule = schedules.build(
            self.spec,
            max_lr=self.max_lr,
            total_steps=total_steps - self.warm_steps,
            tokens_per_step=geometry.tokens_per_step,
        )
        self.geometry = geometry

    def phases(self) -> list[tuple[str, int, int]]:
        """`(name, first step, end step)` of the run: the LR-0 warm steps, then the schedule's."""
        assert self.geometry is not None, "build() first"
        total = self.geometry.max_steps - self.warm_steps
        shifted = [
            (name, start + self.warm_steps, end + self.warm_steps)
            for name, start, end in schedules.phases(
                self.spec, total, self.geometry.tokens_per_step
            )
        ]
        return [("warm", 0, self.warm_steps)] * (self.warm_steps > 0) + shifted

    def check(self, geometry: BatchGeometry) -> None:
        """The callback protocol's pre-run check: the schedule must fit the run."""
        try:
            self.build(geometry)
        except ValueError as err:
            key, _, message = str(err).partition(": ")
            group = "callbacks.rewarm" if key == "warm_steps" else "schedule"
            raise ValueError(f"{group}.{key}: {message}") from None

    def lr_at(self, step: int) -> float:
        assert self._schedule is not None, "build() first"
        if step < self.warm_steps:
            return 0.0
        return self._schedule(step - self.warm_steps)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        geometry = trainer.datamodule.geometry  # the one the entry point computed and checked
        if self._schedule is None or self.geometry != geometry:
            self.build(geometry)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.ckpt_path is not None or self.optimizer_state != "load":
            return  # a resume restored the whole state already
        if not self.init.startswith("ckpt:"):
            log.warning(
                "optimizer_state=load: init=%s carries no optimizer state; starting fresh",
                self.init,
            )
            return
        from cpt.checkpoints.files import read_lightning_checkpoint
        from cpt.checkpoints.sharded import TENSORS, load_optimizer_state

        path = self.init.removeprefix("ckpt:")  # a file or a sharded folder, read whole
        states = read_lightning_checkpoint(path, TENSORS).get("optimizer_states") or []
        if not states:
            log.warning(
                "optimizer_state=load: %s has no optimizer state; starting fresh", self.init
            )
            return
        optimizer = trainer.optimizers[0]
        # the moments and step counts come from upstream; LR, weight decay, betas and eps are
        # this run's (`load_state_dict` would restore the upstream's settings with them)
        settings = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
        load_optimizer_state(pl_module, optimizer, states[0])
        for group, own in zip(optimizer.param_groups, settings):
            group.update(own)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        lr = self.lr_at(trainer.global_step)
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = lr
