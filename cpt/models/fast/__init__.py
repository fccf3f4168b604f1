"""The fast paths, selected in one place. The model files call these by their plain meaning
(`norm_linear(x, norm, linear)` is `linear(norm(x))`); what runs instead is decided here.

- `norm_linear`, `act_linear` (`recompute.py`): the same values and gradients as the plain layers,
  keeping the norm's or the activation's input for backward instead of its output (less activation
  memory, on every device; the activation's derivative applied in place).
- `causal_attention` (`blocked_attention.py`): on a CPU in bf16, causal attention without
  documents over more than one block of queries goes by blocks of matmuls instead of PyTorch's CPU
  flash kernel; elsewhere `None` (the attention backend's own kernel).
- the chunked loss head's CPU kernels (`loss_head.py`, used by `cpt/models/loss.py`).

`plain()` turns the first two off for a block of code: the reference the equivalence tests compare
with (`tests/models/test_fast.py`); the golden loss curve is measured with them on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from cpt.models.autocast import compute_dtype
from cpt.models.fast.blocked_attention import BLOCK, blocked_causal_attention
from cpt.models.fast.recompute import ACTIVATIONS, activation_linear, layer_norm_linear

_enabled = True


@contextlib.contextmanager
def plain() -> Iterator[None]:
    """Inside: the plain layers and PyTorch's own attention kernel."""
    global _enabled
    previous, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = previous


def norm_linear(x: torch.Tensor, norm: nn.LayerNorm, linear: nn.Linear) -> torch.Tensor:
    """`linear(norm(x))`."""
    if not _enabled:
        return linear(norm(x))
    return layer_norm_linear(x, norm, linear)


def act_linear(h: torch.Tensor, activation: str, linear: nn.Linear) -> torch.Tensor:
    """`linear(act(h))` for the activation of that (Hugging Face) name."""
    act, act_grad = ACTIVATIONS[activation]
    if not _enabled:
        return linear(act(h))
    return activation_linear(h, act, linear.weight, linear.bias, act_grad)


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor | None:
    """Causal attention by blocks where that is faster than PyTorch's kernel, else None."""
    if not (_enabled and q.device.type == "cpu" and compute_dtype(v) == torch.bfloat16):
        return None
    if q.shape[-2] <= BLOCK:
        return None
    dtype = compute_dtype(v)  # one dtype: under autocast rotary promotes q and k to fp32
    return blocked_causal_attention(q.to(dtype), k.to(dtype), v.to(dtype))


__all__ = ["ACTIVATIONS", "act_linear", "causal_attention", "norm_linear", "plain"]
