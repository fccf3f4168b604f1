"""Linear layers that keep the input of the cheap elementwise step before them for backward.

`activation_linear`: `linear(act(h))` that keeps only `h` and recomputes `act(h)`. In an MLP the
activation's input and output are both `[tokens, intermediate]`, the largest tensors a block
keeps for backward (4x the width in GPT-NeoX). The output projection needs the activation's
output for its weight gradient, the activation needs its input; recomputing the cheap elementwise
activation in backward keeps one of the two, about a quarter of a block's activation memory, for
one extra elementwise pass. Same values and gradients as the plain path.

`layer_norm_linear`: `linear(layer_norm(x))` that keeps only `x` and recomputes the norm. A
block keeps its input `x` anyway (the norm's backward needs it); the norm's output, kept by the
linear layer for its weight gradient, is one more `[tokens, d]` tensor per norm (two per GPT-NeoX
block, a fifth of its activations in fp32) for one normalisation pass in backward.
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
    act_grad: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """`F.linear(act(h), weight, bias)`, keeping `h` (not `act(h)`) for backward.

    `act_grad(grad, h)`, the activation's derivative applied to `grad` in place, lets backward
    hold one `[tokens, intermediate]` temporary at a time instead of three (the recomputed
    activation, its gradient and the input's gradient, as autograd would hold them).
    """
    if not torch.is_grad_enabled():
        return F.linear(act(h), weight, bias)
    return _ActivationLinear.apply(h, weight, bias, act, act_grad, compute_dtype(h))


class _ActivationLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, bias, act, act_grad, compute):  # noqa: ANN001, ANN205
        with torch.autocast(h.device.type, enabled=False):
            out = F.linear(
                act(h.to(compute)), weight.to(compute), None if bias is None else bias.to(compute)
            )
        ctx.save_for_backward(h, weight, bias)
        ctx.act, ctx.act_grad, ctx.compute = act, act_grad, compute
        return out

    @staticmethod
    def backward(ctx, grad_out):  # noqa: ANN001, ANN205
        h, weight, bias = ctx.saved_tensors
        compute = ctx.compute
        g = grad_out.to(compute)
        flat_g = g.reshape(-1, g.shape[-1])
        with torch.autocast(h.device.type, enabled=False):
            if ctx.act_grad is not None:
                # one [tokens, intermediate] temporary at a time: the activation for the weight
                # gradient, freed; then its gradient, turned into the input's in place
                h_c = h.to(compute)
                a = ctx.act(h_c)
                grad_weight = (flat_g.T @ a.reshape(-1, a.shape[-1])).to(weight.dtype)
                del a
                grad_h = ctx.act_grad(g @ weight.to(compute), h_c).to(h.dtype)
            else:
                with torch.enable_grad():
                    h_in = h.detach().to(compute).requires_grad_(True)
                    a = ctx.act(h_in)
                    grad_a = g @ weight.to(compute)
                    grad_h = torch.autograd.grad(a, h_in, grad_a)[0].to(h.dtype)
                grad_weight = (flat_g.T @ a.detach().reshape(-1, a.shape[-1])).to(weight.dtype)
        grad_bias = None if bias is None else flat_g.sum(0).to(bias.dtype)
        return grad_h, grad_weight, grad_bias, None, None, None


def layer_norm_linear(
    x: torch.Tensor, norm: torch.nn.LayerNorm, linear: torch.nn.Linear
) -> torch.Tensor:
    """`linear(norm(x))`, keeping `x` (not `norm(x)`) for backward."""
    if not torch.is_grad_enabled():
        return linear(norm(x))
    return _LayerNormLinear.apply(
        x, norm.weight, norm.bias, norm.eps, linear.weight, linear.bias, compute_dtype(x)
    )


class _LayerNormLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, norm_weight, norm_bias, eps, weight, bias, compute):  # noqa: ANN001, ANN205
        shape = (x.shape[-1],)
        with torch.autocast(x.device.type, enabled=False):
            y = F.layer_norm(x, shape, norm_weight, norm_bias, eps).to(compute)
            out = F.linear(y, weight.to(compute), None if bias is None else bias.to(compute))
        ctx.save_for_backward(x, norm_weight, norm_bias, weight, bias)
        ctx.eps, ctx.compute = eps, compute
        return out

    @staticmethod
    def backward(ctx, grad_out):  # noqa: ANN001, ANN205
        x, norm_weight, norm_bias, weight, bias = ctx.saved_tensors
        compute = ctx.compute
        norm_params = [p for p in (norm_weight, norm_bias) if p is not None]
        with torch.autocast(x.device.type, enabled=False), torch.enable_grad():
            inputs = [t.detach().requires_grad_(True) for t in (x, *norm_params)]
            x_in, *params = inputs
            w_in = params[0] if norm_weight is not None else None
            b_in = params[-1] if norm_bias is not None else None
            y = F.layer_norm(x_in, (x.shape[-1],), w_in, b_in, ctx.eps).to(compute)
            g = grad_out.to(compute)
            flat_g = g.reshape(-1, g.shape[-1])
            grad_weight = (flat_g.T @ y.detach().reshape(-1, y.shape[-1])).to(weight.dtype)
            grad_bias = None if bias is None else flat_g.sum(0).to(bias.dtype)
            grads = torch.autograd.grad(y, inputs, g @ weight.to(compute))
        grad_x, *grad_params = grads
        grad_norm_weight = grad_params[0] if norm_weight is not None else None
        grad_norm_bias = grad_params[-1] if norm_bias is not None else None
        return (
            grad_x.to(x.dtype),
            grad_norm_weight,
            grad_norm_bias,
            None,
            grad_weight,
            grad_bias,
            None,
        )
