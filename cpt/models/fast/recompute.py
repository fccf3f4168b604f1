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


def _linear(
    y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, compute: torch.dtype
) -> torch.Tensor:
    """`F.linear` in the compute dtype, as autocast would run it (autocast off inside)."""
    return F.linear(y, weight.to(compute), None if bias is None else bias.to(compute))


def _linear_param_grads(
    g: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The weight's and bias's gradients of `linear(y)` for the output gradient `g`."""
    flat_g = g.reshape(-1, g.shape[-1])
    grad_weight = (flat_g.T @ y.reshape(-1, y.shape[-1])).to(weight.dtype)
    return grad_weight, None if bias is None else flat_g.sum(0).to(bias.dtype)


class _ActivationLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, bias, act, act_grad, compute):  # noqa: ANN001, ANN205
        with torch.autocast(h.device.type, enabled=False):
            out = _linear(act(h.to(compute)), weight, bias, compute)
        ctx.save_for_backward(h, weight, bias)
        ctx.act, ctx.act_grad, ctx.compute = act, act_grad, compute
        return out

    @staticmethod
    def backward(ctx, grad_out):  # noqa: ANN001, ANN205
        h, weight, bias = ctx.saved_tensors
        compute = ctx.compute
        g = grad_out.to(compute)
        with torch.autocast(h.device.type, enabled=False):
            if ctx.act_grad is not None:
                # one [tokens, intermediate] temporary at a time: the activation for the weight
                # gradient, freed; then its gradient, turned into the input's in place
                h_c = h.to(compute)
                grad_weight, grad_bias = _linear_param_grads(g, ctx.act(h_c), weight, bias)
                grad_h = ctx.act_grad(g @ weight.to(compute), h_c).to(h.dtype)
            else:
                with torch.enable_grad():
                    h_in = h.detach().to(compute).requires_grad_(True)
                    a = ctx.act(h_in)
                    grad_h = torch.autograd.grad(a, h_in, g @ weight.to(compute))[0].to(h.dtype)
                grad_weight, grad_bias = _linear_param_grads(g, a.detach(), weight, bias)
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
        with torch.autocast(x.device.type, enabled=False):
            y = F.layer_norm(x, (x.shape[-1],), norm_weight, norm_bias, eps).to(compute)
            out = _linear(y, weight, bias, compute)
        ctx.save_for_backward(x, norm_weight, norm_bias, weight, bias)
        ctx.eps, ctx.compute = eps, compute
        return out

    @staticmethod
    def backward(ctx, grad_out):  # noqa: ANN001, ANN205
        x, norm_weight, norm_bias, weight, bias = ctx.saved_tensors
        compute = ctx.compute
        g = grad_out.to(compute)
        # the norm's input and parameters, fresh leaves (None where the norm has no such parameter)
        leaves = [
            None if t is None else t.detach().requires_grad_(True)
            for t in (x, norm_weight, norm_bias)
        ]
        with torch.autocast(x.device.type, enabled=False), torch.enable_grad():
            y = F.layer_norm(leaves[0], (x.shape[-1],), leaves[1], leaves[2], ctx.eps).to(compute)
            grad_weight, grad_bias = _linear_param_grads(g, y.detach(), weight, bias)
            present = [t for t in leaves if t is not None]
            found = iter(torch.autograd.grad(y, present, g @ weight.to(compute)))
        grad_x, grad_norm_weight, grad_norm_bias = (
            None if t is None else next(found) for t in leaves
        )
        return (
            grad_x.to(x.dtype),
            grad_norm_weight,
            grad_norm_bias,
            None,
            grad_weight,
            grad_bias,
            None,
        )


def _gelu_grad(approximate: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """GELU's derivative at `h` applied to `grad`, written over `grad`."""

    def apply(grad: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten.gelu_backward.grad_input(
            grad, h, approximate=approximate, grad_input=grad
        )

    return apply


# each activation by its Hugging Face name, with its derivative applied in place (for the MLP's
# recomputing backward)
ACTIVATIONS = {
    "gelu": (lambda x: F.gelu(x), _gelu_grad("none")),
    "gelu_new": (lambda x: F.gelu(x, approximate="tanh"), _gelu_grad("tanh")),
    "gelu_fast": (lambda x: F.gelu(x, approximate="tanh"), _gelu_grad("tanh")),
    "gelu_pytorch_tanh": (lambda x: F.gelu(x, approximate="tanh"), _gelu_grad("tanh")),
    "relu": (F.relu, lambda grad, h: grad.mul_(h > 0)),
}
