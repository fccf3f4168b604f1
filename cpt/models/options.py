"""`ModelOptions`: the `model` config group. Which architecture (a preset, or the `init`
checkpoint's own) and how it runs; none of the options changes what the network computes."""

from __future__ import annotations

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
