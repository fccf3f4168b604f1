"""Lightning's precision names, read in one place: what a step computes in and what it stores.

`bf16-mixed` computes matmuls in bf16 under autocast and keeps fp32 weights; `bf16-true` stores the
weights themselves in bf16; the short names are Lightning's aliases (`bf16` is `bf16-mixed`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# name -> (compute dtype, weights stored in 16 bits)
PRECISIONS = {
    "64-true": ("fp64", False),
    "32-true": ("fp32", False),
    "16-mixed": ("fp16", False),
    "bf16-mixed": ("bf16", False),
    "16-true": ("fp16", True),
    "bf16-true": ("bf16", True),
    "64": ("fp64", False),
    "32": ("fp32", False),
    "16": ("fp16", False),
    "bf16": ("bf16", False),
}


@dataclass(frozen=True)
class Precision:
    name: str
    compute: str  # fp64 | fp32 | fp16 | bf16
    low_weights: bool  # the weights (and their gradients, AdamW's moments) in 16 bits

    @property
    def low(self) -> bool:
        """Matmuls and activations in 16 bits."""
        return self.compute in ("fp16", "bf16")


def precision_of(value: Any) -> Precision:
    """`trainer.precision` as a `Precision`; raises ValueError('trainer.precision: ...')."""
    name = str(value)
    if name not in PRECISIONS:
        raise ValueError(f"trainer.precision: expected one of {list(PRECISIONS)}, got {value!r}")
    return Precision(name, *PRECISIONS[name])
