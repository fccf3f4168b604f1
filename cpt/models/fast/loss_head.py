"""The chunked loss head's CPU kernels (`cpt/models/loss.py` runs them on a CPU): the chunk's
softmax gradient made in place over its logits, and a bf16 weight-gradient accumulator kept in the
first half of the fp32 gradient's own storage, widened in place at the end.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# a per-token probability below this (a loss above ~69 nats) is recomputed in fp32: bf16 keeps
# fp32's exponent range, but its subnormals carry too few bits for a logarithm
_SMALLEST_PROBABILITY = 1e-30


def softmax_chunk(
    h: torch.Tensor,
    w: torch.Tensor,
    targets: torch.Tensor,
    rows: torch.Tensor,
    losses: torch.Tensor,
) -> torch.Tensor:
    """One chunk's gradient `softmax - one_hot` over its logits `h @ w.T`, made in place (a CPU
    tensor, in `w`'s dtype); the chunk's losses written into `losses`.

    One fused softmax (fp32 inside) replaces a log-softmax and its exponential: one pass over the
    chunk instead of two, and in bf16 no fp32 copy of the logits and no cast of the gradient back
    (a third of the bytes). The loss is -log of the target's probability, exact but for that
    probability's rounding (fp32: 1e-7 nats; bf16: 2**-9 relative, 0.004 nats a token at most,
    unbiased, well inside the rounding the bf16 logits already carry); a probability too small to
    hold precisely (a loss above 69 nats) takes the exact fp32 log-softmax of its row's logits,
    recomputed.
    """
    logits = F.linear(h, w)
    probs = torch.softmax(logits, dim=-1, out=logits)  # a CPU row is read before it is written
    p_target = probs[rows, targets].float()
    losses.copy_(-p_target.log())
    tiny = p_target < _SMALLEST_PROBABILITY
    if tiny.any():
        exact = torch.log_softmax(F.linear(h[tiny], w).float(), dim=-1)
        losses[tiny] = -exact.gather(1, targets[tiny, None]).squeeze(1)
    probs[rows, targets] -= 1.0
    return probs


def low_half(full: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A `dtype` tensor of `full`'s shape in the first bytes of `full`'s (wider) storage."""
    return full.view(-1).view(dtype)[: full.numel()].view(full.shape)


def widen_in_place(full: torch.Tensor, dtype: torch.dtype) -> None:
    """Turn `low_half(full, dtype)` into `full`'s own values, without a second buffer.

    Rows are widened from the last to the first, in ranges `[lo, hi)` with `hi <= 2 lo` (whose
    narrow source, at bytes `[lo, hi) * row_bytes / 2`, lies below their wide destination, and
    above every row not yet widened); the last few rows go through a copy.
    """
    narrow = low_half(full, dtype)
    hi = full.shape[0]
    while hi > 8:
        lo = (hi + 1) // 2
        full[lo:hi].copy_(narrow[lo:hi])
        hi = lo
    full[:hi].copy_(narrow[:hi].clone())
