"""Rotary position embeddings, shared by every model family.

The cos/sin tables come in `[batch, seq, 1, dim]`, which broadcasts over the heads of
`[batch, seq, heads, head_size]`: rotary is applied in that layout, so attention's output comes back
in the same layout and merging the heads is a view, not a copy.
"""

from __future__ import annotations

import torch
from torch import nn


def rotary_frequencies(dim: int, base: float) -> torch.Tensor:
    """The standard rotary inverse frequencies of `dim` rotated channels."""
    return 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))


class RotaryEmbedding(nn.Module):
    """cos/sin tables for the rotated channels of each head."""

    def __init__(self, inv_freq: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        freqs = position_ids[..., None].float() * self.inv_freq.to(position_ids.device)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos()[:, :, None].to(dtype), emb.sin()[:, :, None].to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first `cos.shape[-1]` channels of every head; pass the rest through."""
    n = cos.shape[-1]
    x_rot, x_pass = x[..., :n], x[..., n:]
    return torch.cat((x_rot * cos + _rotate_half(x_rot) * sin, x_pass), dim=-1)
