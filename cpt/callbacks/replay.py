"""`Replay`: the share of every batch drawn from one source, constant or changing over the run.

`fraction` of every global batch comes from `source` (the upstream data, for replay); the other
sources keep their relative weights from `data.mixture`. With `end_fraction` the share moves from
`fraction` to `end_fraction` between `start` and `end` (fractions of the run), linearly or by a
cosine: a decaying replay, or a domain upsampled in the last 10-20 % of steps (start=end=0.85 switches
at once). The mixture's counts stay a function of the step alone, so resume stays exact.
"""

from __future__ import annotations

import math

import lightning as L
import numpy as np

from cpt.callbacks.base import CPTCallback


class Replay(CPTCallback):
    def __init__(
        self,
        source: str = "upstream",
        fraction: float = 0.25,
        end_fraction: float | None = None,
        start: float = 0.0,
        end: float = 1.0,
        shape: str = "linear",
    ) -> None:
        for key, value in (("fraction", fraction), ("end_fraction", end_fraction)):
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"callbacks.replay.{key}: expected a value in [0, 1], got {value}")
        if not 0.0 <= start <= end <= 1.0:
            raise ValueError(
                f"callbacks.replay: expected 0 <= start <= end <= 1, got {start}, {end}"
            )
        if shape not in ("linear", "cosine"):
            raise ValueError(f"callbacks.replay.shape: expected linear or cosine, got {shape!r}")
        self.source, self.fraction, self.end_fraction = source, fraction, end_fraction
        self.start, self.end, self.shape = start, end, shape
        self.total_steps = 1
        self._base: np.ndarray | None = None
        self._index = 0

    def fraction_at(self, step: int) -> float:
        """The replay share at optimizer step `step` (a pure function of the step)."""
        if self.end_fraction is None:
            return self.fraction
        progress = step / self.total_steps
        if progress < self.start:
            return self.fraction
        if progress >= self.end:
            return self.end_fraction
        x = (progress - self.start) / (self.end - self.start)
        if self.shape == "cosine":
            x = 0.5 * (1.0 - math.cos(math.pi * x))
        return self.fraction + (self.end_fraction - self.fraction) * x

    def weights_at(self, step: int) -> np.ndarray:
        """Mixture weights: `fraction_at(step)` for the source, the rest in their old proportions."""
        f = self.fraction_at(step)
        others = self._base.copy()
        others[self._index] = 0.0
        if others.sum() == 0:
            if f < 1.0:
                raise ValueError(
                    f"replay of {self.source!r}: no other source to fill 1 - {f} of the batch"
                )
            others[self._index] = 1.0
            return others
        weights = others / others.sum() * (1.0 - f)
        weights[self._index] = f
        return weights

    def bind(self, names: list[str], weights: np.ndarray, total_steps: int) -> None:
        """Fix the mixture's sources (`names`, base `weights`) and the run's length: then
        `weights_at(step)` is the mixture of every step (the entry point's plan uses it too)."""
        if self.source not in names:
            raise ValueError(f"source: {self.source!r} is not a mixture source; got {names}")
        self.total_steps = total_steps
        self._base = np.asarray(weights, dtype=np.float64).copy()
        self._index = names.index(self.source)
        self.weights_at(0)  # fail now, not at the first batch

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        datamodule = trainer.datamodule
        mixture = datamodule.include_source(self.source)
        pl_module.set_sources(mixture.names)
        self.bind(mixture.names, mixture.weights, trainer.max_steps)
        mixture.set_weight_schedule(self.weights_at)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        mixture = trainer.datamodule.mixture
        step = trainer.global_step - 1  # the step just taken
        counts = mixture.counts(max(step, 0))
        pl_module.log("replay/fraction_target", self.fraction_at(max(step, 0)))
        pl_module.log("replay/fraction", float(counts[self._index] / counts.sum()))
