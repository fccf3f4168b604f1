"""Attention backends behind one seam: `attend(q, k, v, backend)`.

`sdpa` (PyTorch's fused kernels) is the default; `eager` is the readable reference used in parity
tests. A further backend (flash-attn) plugs in here without touching the model.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

BACKENDS = ("sdpa", "eager")


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str) -> torch.Tensor:
    """Causal attention over `[batch, heads, seq, head_size]` tensors."""
    if backend == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    if backend == "eager":
        return _eager(q, k, v)
    raise ValueError(f"attention backend {backend!r} unknown; expected one of {BACKENDS}")


def _eager(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    t = q.shape[-2]
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    future = torch.ones(t, t, dtype=torch.bool, device=q.device).triu(1)
    scores = scores.masked_fill(future, float("-inf"))
    return torch.softmax(scores.float(), dim=-1).to(q.dtype) @ v
