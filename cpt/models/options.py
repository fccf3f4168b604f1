"""`ModelOptions`: the `model` config group. Which architecture (a preset, or the `init`
checkpoint's own) and how it runs; none of the options changes what the network computes, and
only `z_loss` changes what training minimises."""

from __future__ import annotations

import math
from dataclasses import dataclass

from cpt.models.attention import BACKENDS
from cpt.models.presets import preset_names


@dataclass
class ModelOptions:
    name: str | None = None  # a preset; None takes the architecture of the `init` checkpoint
    attention: str = "sdpa"  # sdpa | flash (CUDA, flash-attn) | eager (the reference)
    loss: str = "chunked"  # chunked: no [tokens, vocab] logits kept | plain: the reference
    activation_checkpointing: bool = False  # recompute block activations in backward
    compile: bool = False  # torch.compile every block (falls back to eager if Inductor fails)
    z_loss: float = 0.0  # coefficient of a z-loss on the output logits (PaLM: 1e-4); 0: none

    def __post_init__(self) -> None:
        if self.name is not None and self.name not in preset_names():
            raise ValueError(
                f"name: unknown preset {self.name!r}; expected one of {preset_names()}"
            )
        if self.attention not in BACKENDS:
            raise ValueError(
                f"attention: {self.attention!r} unknown; expected one of {list(BACKENDS)}"
            )
        if self.loss not in ("chunked", "plain"):
            raise ValueError(f"loss: {self.loss!r} unknown; expected chunked or plain")
        if not (self.z_loss >= 0 and math.isfinite(self.z_loss)):
            raise ValueError(f"z_loss: expected a coefficient >= 0 (PaLM: 1e-4), got {self.z_loss}")
