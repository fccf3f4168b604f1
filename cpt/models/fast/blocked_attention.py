"""Causal attention by query blocks, from matmuls: what `sdpa` runs on a CPU in bf16 without
documents, for sequences longer than one block.

PyTorch's CPU flash kernel runs bf16 attention well below the matmul rate (measured:
docs/performance.md). Here each block of `BLOCK` queries is one batched matmul against the keys up
to its end (the blocks above the diagonal are never computed), a softmax in place and one more
matmul; backward recomputes the probabilities block by block, so that what is kept is q, k and v
(the output is the next projection's input, kept there) and a block's scores are the largest
temporary. The scores are in the inputs' dtype (fp32 accumulation inside the matmul; in bf16
rounded as eager attention rounds them), the softmax in fp32 inside. `tests/models/test_fast.py` holds it to the eager reference.
"""

from __future__ import annotations

import math

import torch

BLOCK = 128  # queries per block: matmuls large enough to run near the peak, scores small


def blocked_causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal attention over `[batch, heads, seq, head_size]` (one dtype)."""
    return _BlockedCausal.apply(q, k, v)


def _blocks(t: int) -> list[tuple[int, int]]:
    return [(start, min(start + BLOCK, t)) for start in range(0, t, BLOCK)]


def _probabilities(
    q: torch.Tensor, k: torch.Tensor, start: int, stop: int, scale: float
) -> torch.Tensor:
    """`[batch, heads, stop - start, stop]`: the block's queries against every key up to its end."""
    scores = torch.matmul(q[:, :, start:stop], k[:, :, :stop].transpose(-1, -2))
    scores.mul_(scale)
    rows = stop - start
    future = torch.ones(rows, rows, dtype=torch.bool, device=q.device).triu_(1)
    scores[..., start:stop].masked_fill_(future, float("-inf"))
    return torch.softmax(scores, dim=-1, out=scores)  # in place on a CPU (tested)


class _BlockedCausal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v):  # noqa: ANN001, ANN205
        b, h, t, d = q.shape
        scale = 1.0 / math.sqrt(d)
        # [batch, seq, heads, dim] in memory, as the flash kernel returns it: merging the heads
        # after attention is then a view
        out = torch.empty(b, t, h, d, dtype=q.dtype, device=q.device).transpose(1, 2)
        for start, stop in _blocks(t):
            probs = _probabilities(q, k, start, stop, scale)
            out[:, :, start:stop] = torch.matmul(probs, v[:, :, :stop])
            del probs
        ctx.save_for_backward(q, k, v)
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx, grad_out):  # noqa: ANN001, ANN205
        q, k, v = ctx.saved_tensors
        scale, t = ctx.scale, q.shape[2]
        grad_q, grad_k, grad_v = (torch.empty_like(x) for x in (q, k, v))
        # the last block reaches every key: its products are written, the earlier ones added
        for index, (start, stop) in enumerate(reversed(_blocks(t))):
            last = index == 0
            probs = _probabilities(q, k, start, stop, scale)
            g = grad_out[:, :, start:stop]
            _write_or_add(grad_v[:, :, :stop], torch.matmul(probs.transpose(-1, -2), g), last)
            grad_probs = torch.matmul(g, v[:, :, :stop].transpose(-1, -2))
            # p * (dp - sum(dp * p)): the softmax's own fused backward, then the 1/sqrt(d)
            grad_scores = torch._softmax_backward_data(grad_probs, probs, -1, probs.dtype)
            del probs, grad_probs
            grad_scores.mul_(scale)
            grad_q[:, :, start:stop] = torch.matmul(grad_scores, k[:, :, :stop])
            product = torch.matmul(grad_scores.transpose(-1, -2), q[:, :, start:stop])
            _write_or_add(grad_k[:, :, :stop], product, last)
        return grad_q, grad_k, grad_v


def _write_or_add(into: torch.Tensor, product: torch.Tensor, write: bool) -> None:
    if write:
        into.copy_(product)
    else:
        into.add_(product)
