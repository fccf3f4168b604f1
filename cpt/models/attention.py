"""Attention backends behind one seam: `attend(q, k, v, backend)`.

`sdpa` (PyTorch's fused kernels) is the default; `eager` is the readable reference used in parity
tests. A further backend (flash-attn) plugs in here without touching the model.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

BACKENDS = ("sdpa", "eager")


def document_mask(segment_ids: torch.Tensor) -> torch.Tensor:
    """`[batch, 1, seq, seq]` boolean mask: causal and within the same document (block-diagonal)."""
    t = segment_ids.shape[-1]
    causal = torch.ones(t, t, dtype=torch.bool, device=segment_ids.device).tril()
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    return (causal & same)[:, None]


def cu_seqlens(segment_ids: torch.Tensor) -> torch.Tensor:
    """Cumulative document lengths over the flattened batch (int32), as varlen kernels take them."""
    flat = segment_ids + torch.arange(len(segment_ids), device=segment_ids.device)[:, None] * (
        segment_ids.max() + 1
    )
    _, counts = torch.unique_consecutive(flat.flatten(), return_counts=True)
    return torch.cat([counts.new_zeros(1), counts.cumsum(0)]).to(torch.int32)


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    backend: str,
    segment_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Causal attention over `[batch, heads, seq, head_size]`; per document when `segment_ids`."""
    mask = None if segment_ids is None else document_mask(segment_ids)
    if backend == "sdpa":
        if mask is None:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    if backend == "eager":
        return _eager(q, k, v, mask)
    raise ValueError(f"attention backend {backend!r} unknown; expected one of {BACKENDS}")


def _eager(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    t = q.shape[-2]
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    if mask is None:
        mask = torch.ones(t, t, dtype=torch.bool, device=q.device).tril()
    scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores.float(), dim=-1).to(q.dtype) @ v
