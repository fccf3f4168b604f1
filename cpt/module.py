"""The LightningModule: the LM, its loss per source, AdamW, validation per domain."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.distributed.tensor import DTensor

from cpt.errors import UserError
from cpt.models.norms import weight_decay_groups
from cpt.models.registry import build_model, config_from_dict


def local(tensor: torch.Tensor) -> torch.Tensor:
    """This process's part of a tensor: its shard of a `DTensor` (FSDP), else the tensor."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


class NonFiniteLossError(UserError, RuntimeError):
    """The training loss became NaN or infinite (the `SaveOnFailure` callback sets `saved`)."""

    kind = "nonfinite"  # names the checkpoint `SaveOnFailure` writes

    def __init__(self, loss: float, step: int) -> None:
        super().__init__(loss, step)
        self.loss, self.step = loss, step
        self.saved: Path | None = None

    def __str__(self) -> str:
        where = (
            f"the last good state is in {self.saved}"
            if self.saved is not None
            else "no checkpoint was saved (add callbacks.save_on_failure)"
        )
        return (
            f"train/loss is {self.loss} at step {self.step}; {where} "
            "(optim.on_nonfinite=skip skips such steps instead)"
        )


class LossSpikeError(NonFiniteLossError):
    """The training loss rose above the spike rule's bound (`optim.on_spike=stop`)."""

    kind = "spike"

    def __init__(self, loss: float | None, step: int, bound: float | None) -> None:
        super().__init__(loss, step)
        self.bound = bound

    def __str__(self) -> str:
        where = (
            f"the last good state is in {self.saved}"
            if self.saved is not None
            else "no checkpoint was saved (add callbacks.save_on_failure)"
        )
        what = (
            "on another process"
            if self.loss is None
            else f"to {self.loss:.4f}, above the bound {self.bound:.4f}"
        )
        return (
            f"train/loss spiked {what} at step {self.step} (optim.spike_margin nats over the "
            f"mean of the last optim.spike_window losses); {where} "
            "(optim.on_spike=skip skips such steps instead)"
        )


@dataclass
class OptimConfig:
    """The `optim` config group: AdamW; the LR of every step comes from the schedule (`Rewarm`)."""

    max_lr: float = 3e-4
    weight_decay: float = 0.1
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    on_nonfinite: str = (
        "stop"  # stop (save the last good state, fail) | skip (count, skip the step)
    )
    # a loss spike: a micro-batch's loss above the mean of the last `spike_window` ones (of this
    # process) by `spike_margin` nats; off | skip (the whole optimizer step) | stop (as non-finite)
    on_spike: str = "off"
    spike_window: int = 100
    spike_margin: float = 1.0

    def __post_init__(self) -> None:
        if not self.max_lr > 0:
            raise ValueError(f"max_lr: expected a positive learning rate, got {self.max_lr}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay: expected a value >= 0, got {self.weight_decay}")
        if not self.eps > 0:
            raise ValueError(f"eps: expected a positive value, got {self.eps}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas: expected two values in [0, 1), got {list(self.betas)}")
        if self.on_nonfinite not in ("stop", "skip"):
            raise ValueError(f"on_nonfinite: expected stop or skip, got {self.on_nonfinite!r}")
        if self.on_spike not in ("off", "skip", "stop"):
            raise ValueError(f"on_spike: expected off, skip or stop, got {self.on_spike!r}")
        if isinstance(self.spike_window, bool) or not self.spike_window >= 2:
            raise ValueError(f"spike_window: expected a count >= 2, got {self.spike_window}")
        if not (self.spike_margin > 0 and math.isfinite(self.spike_margin)):
            raise ValueError(f"spike_margin: expected nats > 0, got {self.spike_margin}")


class CPTModule(L.LightningModule):
    """Hyperparameters are plain dicts, so a checkpoint describes its own architecture."""

    def __init__(
        self,
        arch: dict[str, Any],
        attention: str,
        optim: dict[str, Any],
        domains: list[str],
        sources: list[str] | None = None,
        loss: str = "chunked",
        activation_checkpointing: bool = False,
        compile: bool = False,
        z_loss: float = 0.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = build_model(config_from_dict(arch), attention=attention)
        self.model.set_loss(loss, z_loss)
        self.model.activation_checkpointing = activation_checkpointing
        self.domains = list(domains)
        self.sources = list(sources or domains)  # the training mixture's sources, by id
        self.tokens_seen = 0
        self.skipped_steps = 0  # optimizer steps skipped for a non-finite loss (on_nonfinite=skip)
        self._bad_step = False  # a micro-batch of the current optimizer step had one
        self.spikes = 0  # micro-batches the spike rule caught (optim.on_spike)
        self._spike: tuple[float, float] | None = None  # (loss, bound) of this step's spike
        self.recent_losses: deque[float] = deque(maxlen=int(optim.get("spike_window", 100)))
        self.last_val: dict[str, float] = {}
        self.initial_val: dict[str, float] = {}  # before the first step; kept in checkpoints
        self.last_val_step: int | None = None  # the optimizer step `last_val` was measured at
        self._val_sums = torch.zeros(len(self.domains), 2)

    def set_sources(self, names: list[str]) -> None:
        """Names of the training mixture's sources, by the ids batches carry."""
        self.sources = list(names)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids)

    def losses(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean next-token loss with gradient, mean loss of every window `[batch]` without)."""
        ids = batch["input_ids"]
        inputs, targets = ids[:, :-1], ids[:, 1:]
        positions, segments = batch.get("position_ids"), batch.get("segment_ids")
        loss, per_token = self.model(inputs, positions, segments, targets)
        return loss, per_token.mean(dim=1)

    def sequence_losses(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean next-token cross-entropy of every `seq_len + 1` window: shape `[batch]`."""
        return self.losses(batch)[1]

    def configure_model(self) -> None:
        """Where a sharding strategy (`cpt.scale.fsdp.FSDP2`) splits the model across ranks."""
        shard = getattr(self.trainer.strategy, "shard", None)
        if shard is not None:
            shard(self.model)

    def on_fit_start(self) -> None:
        if self.hparams.get("compile") and self.trainer.datamodule is not None:
            data = self.trainer.datamodule
            example = torch.zeros(data.micro_batch_size, data.seq_len, dtype=torch.long)
            self.model.compile_blocks(
                example.to(self.device), self.trainer.precision_plugin.forward_context()
            )

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, per_sequence = self.losses(batch)
        ids = batch["input_ids"]
        self.tokens_seen += (ids.shape[0] * (ids.shape[1] - 1)) * self.trainer.world_size  # drawn
        if not torch.isfinite(loss):
            return self._non_finite(loss)
        if self.hparams.optim.get("on_spike", "off") != "off" and self._spiked(loss):
            return loss * 0.0  # the step is skipped or stopped in optimizer_step, on every rank
        z = self.model.z_term
        if z is not None:  # train/loss stays the cross-entropy, comparable with runs without
            self.log("train/z_loss", z)
            self.log("train/loss", loss.detach() - z, prog_bar=True)
        else:
            self.log("train/loss", loss, prog_bar=True)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"])
        self.log("train/tokens", float(self.tokens_seen))
        if len(self.sources) > 1 and "source" in batch:
            self._log_sources(per_sequence.detach(), batch["source"])
        return loss

    def _spiked(self, loss: torch.Tensor) -> bool:
        """Whether this micro-batch's loss is a spike: above the mean of the last
        `spike_window` accepted losses by `spike_margin` (never before the window is full)."""
        value, recent = float(loss.detach()), self.recent_losses
        if len(recent) == recent.maxlen:
            bound = sum(recent) / len(recent) + float(self.hparams.optim["spike_margin"])
            if value > bound:
                self.spikes += 1
                self.log("train/spikes", float(self.spikes))
                if self._spike is None:
                    self._spike = (value, bound)
                return True
        recent.append(value)
        return False

    def _non_finite(self, loss: torch.Tensor) -> torch.Tensor:
        """Mark the optimizer step to be skipped, or stop before it (`SaveOnFailure` saves)."""
        if self.hparams.optim.get("on_nonfinite", "stop") == "skip":
            self._bad_step = True  # the whole optimizer step goes, on every rank: optimizer_step
            # the graph stays (DDP expects every parameter's gradient); they are dropped unused
            return loss * 0.0
        raise NonFiniteLossError(loss.item(), self.global_step)

    def _log_sources(self, per_sequence: torch.Tensor, source: torch.Tensor) -> None:
        """Per-source training loss (this rank's share) and tokens consumed (exact, all ranks)."""
        for i, name in enumerate(self.sources):
            chosen = source == i
            if chosen.any():
                self.log(
                    f"train/{name}/loss", per_sequence[chosen].mean(), batch_size=int(chosen.sum())
                )
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "tokens_consumed"):
            for name, tokens in datamodule.tokens_consumed(self.global_step + 1).items():
                self.log(f"train/{name}/tokens", float(tokens))

    def on_validation_epoch_start(self) -> None:
        self._val_sums = torch.zeros(len(self.domains), 2, device=self.device, dtype=torch.float64)

    def validation_step(
        self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        # every window has seq_len targets: the token-weighted mean is the mean over windows
        losses = self.sequence_losses(batch).detach().double()
        self._val_sums[dataloader_idx, 0] += losses.sum()
        self._val_sums[dataloader_idx, 1] += len(losses)

    def on_validation_epoch_end(self) -> None:
        # Token-weighted means, summed over ranks: exact whatever the batch sizes.
        sums = self.trainer.strategy.reduce(self._val_sums, reduce_op="sum")
        for i, domain in enumerate(self.domains):
            if sums[i, 1] == 0:
                continue
            loss = float(sums[i, 0] / sums[i, 1])
            self.last_val[domain] = loss
            self.log(f"val/{domain}/loss", loss, add_dataloader_idx=False)
            self.log(f"val/{domain}/ppl", math.exp(min(loss, 50.0)), add_dataloader_idx=False)
        self.log("val/tokens", float(self.tokens_seen))  # the x of loss-against-tokens panels
        if not self.trainer.sanity_checking:
            self.last_val_step = self.global_step

    def configure_optimizers(self) -> torch.optim.Optimizer:
        optim = self.hparams.optim
        optimizer = torch.optim.AdamW(
            weight_decay_groups(self.model, optim["weight_decay"]),
            lr=optim["max_lr"],
            betas=tuple(optim["betas"]),
            eps=optim["eps"],
            fused=self._fused_adamw() or None,
        )
        # the learning rate of every step is set by the Rewarm callback, which owns the schedule
        return optimizer

    def _fused_adamw(self) -> bool:
        """One kernel for all parameters, except under Lightning's `*-mixed` precision, whose
        gradient clipping refuses optimizers that could unscale gradients themselves."""
        from lightning.pytorch.plugins.precision import MixedPrecision

        mixed = self._trainer is not None and isinstance(
            self.trainer.precision_plugin, MixedPrecision
        )
        return self.device.type in ("cpu", "cuda") and not mixed

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure=None):
        """With `on_nonfinite=skip` or the spike rule on: a step any of whose micro-batches, on
        any rank, had a non-finite loss or a spike changes nothing (no update, no moment, no
        weight decay), and the step counter (and with it the schedule and the data) moves on;
        or, with `on_spike=stop`, every rank stops before the step."""
        optim = self.hparams.optim
        spike_rule = optim.get("on_spike", "off") != "off"
        if optim.get("on_nonfinite", "stop") != "skip" and not spike_rule:
            return super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        optimizer_closure()  # the last micro-batch's forward and backward
        flags = torch.tensor(
            [float(self._bad_step), float(self._spike is not None)], device=self.device
        )
        spike, self._bad_step, self._spike = self._spike, False, None
        bad, spiked = (float(f) > 0 for f in self.trainer.strategy.reduce(flags, reduce_op="sum"))
        if spiked and optim["on_spike"] == "stop":
            loss, bound = spike or (None, None)  # None: another rank's spike
            raise LossSpikeError(loss, self.global_step, bound)
        if bad or spiked:
            optimizer.zero_grad(set_to_none=True)
            self.skipped_steps += 1
            self.log("train/skipped_steps", float(self.skipped_steps))
            return None
        return optimizer.step(closure=lambda: None)  # hooks and gradient clipping still run

    def state_bytes(self) -> dict[str, int]:
        """Bytes of weights and AdamW state one process holds (its shards under FSDP), the most
        over ranks: what sharding saves, measured rather than estimated."""
        held = [
            sum(local(p).numel() * local(p).element_size() for p in self.parameters()),
            sum(
                local(v).numel() * local(v).element_size()
                for optimizer in self.trainer.optimizers
                for state in optimizer.state.values()
                for v in state.values()
                if torch.is_tensor(v)
            ),
        ]
        most = self.trainer.strategy.reduce(
            torch.tensor(held, dtype=torch.float64, device=self.device), reduce_op="max"
        )
        return {"parameters": int(most[0]), "optimizer": int(most[1])}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["tokens_seen"] = self.tokens_seen
        checkpoint["skipped_steps"] = self.skipped_steps
        checkpoint["spikes"] = self.spikes
        checkpoint["recent_losses"] = list(self.recent_losses)  # the spike rule's window
        checkpoint["accumulate"] = self.trainer.accumulate_grad_batches
        checkpoint["initial_val_loss"] = dict(self.initial_val)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.tokens_seen = int(checkpoint.get("tokens_seen", 0))
        self.skipped_steps = int(checkpoint.get("skipped_steps", 0))
        self.spikes = int(checkpoint.get("spikes", 0))
        self.recent_losses.extend(checkpoint.get("recent_losses") or [])
        self.initial_val = dict(checkpoint.get("initial_val_loss") or {})
        if self._trainer is not None:
            recount_batches(checkpoint, self.trainer.accumulate_grad_batches)


def recount_batches(checkpoint: dict[str, Any], accumulate: int) -> None:
    """Lightning counts micro-batches to know when an optimizer step is due; a run resumed with
    another accumulation (the same global batch on another number of processes) must count
    `accumulate` of its own per step already taken, or its first step takes a partial batch.
    Called before Lightning restores its loops from the same dict."""
    before = checkpoint.get("accumulate")
    loop = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_loop.batch_progress")
    if not before or before == accumulate or loop is None:
        return
    shift = checkpoint["global_step"] * (accumulate - before)
    for part in ("total", "current"):
        for key in ("ready", "started", "processed", "completed"):
            loop[part][key] += shift
