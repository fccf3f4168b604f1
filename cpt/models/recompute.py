"""`activation_linear`: `linear(act(h))` that keeps only `h` for backward and recomputes `act(h)`.

In an MLP the activation's input and output are both `[tokens, intermediate]`, the largest
tensors a block keeps for backward (4x the width in GPT-NeoX). The output projection needs the
activation's output for its weight gradient, the activation needs its input; recomputing the
cheap elementwise activation in backward keeps one of the two, about a quarter of a block's
activation memory, for one extra elementwise pass. Same values and gradients as the plain path.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from cpt.models.autocast import compute_dtype


def activation_linear(
    h: torch.Tensor,
    act: Callable[[torch.Tensor], torch.Tensor],
    weight: torch.Tensor,
    bias: torch.Tensor | None,
) -> torch.Tensor:
    """`F.linear(act(h), weight, bias)`, keeping `h` (not `act(h)`) for backward."""
    if not torch.is_grad_enabled():
        return F.linear(act(h), weight, bias)
    return _ActivationLinear.apply(h, weight, bias, act, compute_dtype(h))


class _ActivationLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, bias, act, compute):  # noqa: ANN001, ANN205
        with torch.autocast(h.device.type, enabled=False):
            out = F.linear(
                act(h.to(compute)), weight.to(compute), None if bias is None else bias.to(compute)
            )
        ctx.save_for_backward(h, weight, bias)
        ctx.act, ctx.compute = act, compute
        return out

    @staticmethod
    def backward(ctx, grad_out):  # noqa: ANN001, ANN205
        h, weight, bias = ctx.saved_tensors
        compute = ctx.compute
        with torch.autocast(h.device.type, enabled=False), torch.enable_grad():
            h_in = h.detach().to(compute).requires_grad_(True)
            a = ctx.act(h_in)
            g = grad_out.to(compute)
            grad_a = g @ weight.to(compute)
            grad_h = torch.autograd.grad(a, h_in, grad_a)[0].to(h.dtype)
        grad_weight = (g.reshape(-1, g.shape[-1]).T @ a.detach().reshape(-1, a.shape[-1])).to(
            weight.dtype
        )
        grad_bias = None if bias is None else g.reshape(-1, g.shape[-1]).sum(0).to(bias.dtype)
        return grad_h, grad_weight, grad_bias, None, None
