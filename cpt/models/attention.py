"""Attention backends behind one seam: `attend(q, k, v, backend, documents)`.

- `sdpa` (default): PyTorch's fused kernels. With document-aware packing it takes, in order of
  preference, PyTorch's varlen flash kernel (CUDA, bf16/fp16), FlexAttention with a block mask
  (CUDA), or a block-diagonal boolean mask (everywhere; what runs on a CPU). Without documents a
  fast path may take over where it is faster (`cpt/models/fast/`: on a CPU in bf16).
- `flash`: the flash-attn package (2 or 3), `flash_attn_varlen_func` with `cu_seqlens` for packed
  documents; CUDA and bf16/fp16 only, imported on first use.
- `eager`: the readable reference every other backend is tested against.

`Documents` is built once per forward pass from the `segment_ids` and caches what each backend
needs (dense mask, cumulative lengths, block mask), so the layers do not rebuild it.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
import torch.nn.functional as F

import cpt.models.fast as fast
from cpt.models.autocast import compute_dtype

BACKENDS = ("sdpa", "eager", "flash")


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


class Documents:
    """The packed documents of a batch (`segment_ids` `[batch, seq]`), with per-backend caches."""

    def __init__(self, segment_ids: torch.Tensor) -> None:
        self.segment_ids = segment_ids

    @functools.cached_property
    def mask(self) -> torch.Tensor:
        return document_mask(self.segment_ids)

    @functools.cached_property
    def cu_seqlens(self) -> torch.Tensor:
        return cu_seqlens(self.segment_ids)

    @functools.cached_property
    def max_len(self) -> int:
        return int((self.cu_seqlens[1:] - self.cu_seqlens[:-1]).max())

    @functools.cached_property
    def block_mask(self) -> Any:
        from torch.nn.attention.flex_attention import create_block_mask

        segments = self.segment_ids

        def causal_document(b, h, q, k):  # noqa: ANN001, ANN202 (FlexAttention's mask_mod)
            return (segments[b, q] == segments[b, k]) & (q >= k)

        b, t = segments.shape
        return create_block_mask(causal_document, b, None, t, t, device=segments.device)


def packed_method(q: torch.Tensor) -> str:
    """How `sdpa` attends per document on this tensor: varlen, flex or mask."""
    if q.is_cuda:
        if compute_dtype(q) in (torch.bfloat16, torch.float16) and _varlen() is not None:
            return "varlen"
        return "flex"
    return "mask"


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    backend: str,
    documents: Documents | None = None,
) -> torch.Tensor:
    """Causal attention over `[batch, heads, seq, head_size]`; per document when `documents`."""
    if backend == "sdpa":
        if documents is None:
            faster = fast.causal_attention(q, k, v)
            if faster is not None:
                return faster
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return _packed_sdpa(q, k, v, documents, packed_method(q))
    if backend == "eager":
        return _eager(q, k, v, None if documents is None else documents.mask)
    if backend == "flash":
        return _flash(q, k, v, documents)
    raise ValueError(f"attention backend {backend!r} unknown; expected one of {BACKENDS}")


def _one_dtype(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """q, k, v in the autocast dtype (or v's): kernels outside autocast's lists need one dtype.

    Under autocast, rotary's fp32 cos/sin promote bf16 queries and keys to fp32; PyTorch's sdpa
    casts them back itself, flash-attn, varlen and FlexAttention do not.
    """
    dtype = compute_dtype(v)
    return q.to(dtype), k.to(dtype), v.to(dtype)


def _packed_sdpa(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, documents: Documents, method: str
) -> torch.Tensor:
    if method in ("varlen", "flex"):
        q, k, v = _one_dtype(q, k, v)
    if method == "varlen":
        b, h, t, d = q.shape
        out = _varlen()(
            *(x.transpose(1, 2).reshape(b * t, h, d) for x in (q, k, v)),
            documents.cu_seqlens,
            documents.cu_seqlens,
            documents.max_len,
            documents.max_len,
            window_size=(-1, 0),  # causal
        )
        return out.view(b, t, h, d).transpose(1, 2)
    if method == "flex":
        return _flex()(q, k, v, block_mask=documents.block_mask)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=documents.mask)


def _eager(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    t = q.shape[-2]
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    if mask is None:
        mask = torch.ones(t, t, dtype=torch.bool, device=q.device).tril()
    scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores.float(), dim=-1).to(q.dtype) @ v


def _flash(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, documents: Documents | None
) -> torch.Tensor:
    flash = flash_attn_module()
    q, k, v = _one_dtype(q, k, v)
    b, h, t, d = q.shape
    q, k, v = (x.transpose(1, 2) for x in (q, k, v))  # flash-attn layout: [batch, seq, heads, dim]
    if documents is None:
        out = flash.flash_attn_func(q, k, v, causal=True)
    else:
        out = flash.flash_attn_varlen_func(
            *(x.reshape(b * t, h, d) for x in (q, k, v)),
            documents.cu_seqlens,
            documents.cu_seqlens,
            documents.max_len,
            documents.max_len,
            causal=True,
        )
    out = out[0] if isinstance(out, tuple) else out  # flash-attn 3 also returns the softmax lse
    return out.reshape(b, t, h, d).transpose(1, 2)


@functools.cache
def flash_attn_module() -> Any:
    """flash-attn 3 (`flash_attn_interface`) when installed, else flash-attn 2."""
    try:
        import flash_attn_interface

        return flash_attn_interface
    except ImportError:
        import flash_attn

        return flash_attn


def flash_available() -> str | None:
    """None when the `flash` backend can run here, else why not (one line)."""
    if not torch.cuda.is_available():
        return "needs a CUDA GPU (none is available); use sdpa"
    try:
        flash_attn_module()
    except ImportError:
        return "needs the flash-attn package (pip install -e .[gpu]); use sdpa"
    return None


@functools.cache
def _varlen() -> Any:
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn


@functools.cache
def _flex() -> Any:
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)
