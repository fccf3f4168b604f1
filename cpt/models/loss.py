"""Next-token cross-entropy from the final hidden states, without materialising all logits.

The plain path builds `[tokens, vocab]` logits, an fp32 copy, a log-softmax saved for backward
and its gradient: at Pythia's 50k vocabulary and 2048 tokens that is 412 MB per fp32 copy, more
than the activations of all the blocks of a small model. Here the output projection and the loss
run over chunks of tokens, and in training each chunk's gradients (to the hidden states and to
the output weight) are computed at once, so only one chunk's logits exist at any time and the
backward pass of the head is a rescaling. Same three matmuls as the plain path, no recomputation.

The differentiable output is the mean over tokens (what training minimises); the per-token
losses come back without gradient, for per-sequence and per-source logging.

An optional z-loss (PaLM, Chowdhery et al. 2022, sec. 5: `coef * log(Z)^2` per token, `Z` the
softmax normaliser) keeps the output logits from drifting: `lm_loss_terms` adds its mean to the
differentiable loss and returns it apart (the per-token losses stay cross-entropy). Its chunks
take the plain log-softmax (no fused CPU softmax): it is an option, not the default path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cpt.models.autocast import compute_dtype
from cpt.models.fast.loss_head import low_half, softmax_chunk, widen_in_place

# elements of one chunk's logits: 10 Mi, 40 MiB in fp32 (the size chosen: docs/performance.md)
CHUNK_ELEMENTS = 10 * 2**20


def chunk_tokens(vocab_size: int) -> int:
    """Tokens per chunk so that a chunk's fp32 logits stay near `CHUNK_ELEMENTS`."""
    return max(1, CHUNK_ELEMENTS // vocab_size)


def lm_loss(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean loss with gradient, per-token losses `targets.shape` without gradient).

    `hidden` `[..., d]`, `weight` `[vocab, d]` (the output projection, no bias), `targets` `[...]`.
    `chunk` tokens per chunk; None or 0 takes the plain full-logits path (the reference).
    """
    loss, losses, _ = lm_loss_terms(hidden, weight, targets, chunk)
    return loss, losses


def lm_loss_terms(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    chunk: int | None,
    z_loss: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """`lm_loss` with a z-loss of coefficient `z_loss` in the mean loss: (loss with gradient,
    per-token cross-entropies, the z-loss term without gradient; None when `z_loss` is 0)."""
    flat_hidden, flat_targets = hidden.reshape(-1, hidden.shape[-1]), targets.reshape(-1)
    if not chunk:
        logits = F.linear(flat_hidden, weight).float()
        losses = F.cross_entropy(logits, flat_targets, reduction="none")
        if not z_loss:
            return losses.mean(), losses.detach().view(targets.shape), None
        z = z_loss * torch.logsumexp(logits, dim=-1).square().mean()
        return losses.mean() + z, losses.detach().view(targets.shape), z.detach()
    # the matmuls run in the autocast dtype when autocast is on, as F.linear would run them
    compute = compute_dtype(hidden)
    grads = torch.is_grad_enabled()  # validation runs under no_grad: losses only
    loss, losses, z = _ChunkedCrossEntropy.apply(
        flat_hidden, weight, flat_targets, chunk, grads, compute, float(z_loss)
    )
    return loss, losses.view(targets.shape), (z if z_loss else None)


def _z_chunk(
    h: torch.Tensor, w: torch.Tensor, t: torch.Tensor, rows: torch.Tensor, coef: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(d(CE + coef log^2 Z)/d(logits), CE, log^2 Z) of one chunk: the softmax scaled by
    `1 + 2 coef log Z`, less the one-hot."""
    logits = F.linear(h, w).float()
    log_z = torch.logsumexp(logits, dim=-1)
    log_probs = logits.sub_(log_z[:, None])
    losses = -log_probs.gather(1, t[:, None]).squeeze(1)
    grad = log_probs.exp_().mul_((1.0 + 2.0 * coef * log_z)[:, None])
    grad[rows, t] -= 1.0
    return grad, losses, log_z.square()


class _ChunkedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk, grads, compute, z_loss):  # noqa: ANN001, ANN205
        n = hidden.shape[0]
        z_sum = torch.zeros((), dtype=torch.float32, device=hidden.device)
        want_hidden = grads and ctx.needs_input_grad[0]
        want_weight = grads and ctx.needs_input_grad[1]
        h_all, w = hidden.to(compute), weight.to(compute)
        losses = torch.empty(n, dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if want_hidden else None
        # the output weight's gradient, fp32. Its chunks' products are summed in place into it,
        # except for bf16 on a CPU, where they are summed in place in a bf16 buffer (oneDNN adds
        # each product in fp32 and rounds the sum once per chunk) that is the first half of the
        # fp32 gradient's own storage, widened in place at the end (`widen_in_place`): an fp32
        # matmul or an fp32 add of every [vocab, d] product would cost twice the bf16 matmul
        # itself, and the two buffers never take memory side by side; the rounding is of bf16,
        # as autocast's own weight gradient (one bf16 matmul) has. Other low precision (CUDA):
        # each product is added to the fp32 gradient.
        in_buffer = compute == torch.bfloat16 and hidden.device.type == "cpu"
        grad_weight = accumulator = None
        if want_weight:
            # the first chunk's product is written, the others summed in place: nothing is
            # zeroed, and the buffer's pages alone are touched until the widening (its other half
            # takes no memory before then)
            grad_weight = torch.empty(weight.shape, dtype=torch.float32, device=weight.device)
            accumulator = low_half(grad_weight, compute) if in_buffer else grad_weight
            if accumulator.dtype != compute:  # low precision off the CPU: products are added
                accumulator.zero_()
        with torch.autocast(hidden.device.type, enabled=False):
            for start in range(0, n, chunk):
                h, t = h_all[start : start + chunk], targets[start : start + chunk]
                rows = torch.arange(len(t), device=t.device)
                if z_loss:
                    grad, chunk_losses, log_z2 = _z_chunk(h, w, t, rows, z_loss)
                    losses[start : start + chunk] = chunk_losses
                    z_sum += log_z2.sum()
                elif h.device.type == "cpu":
                    # d(sum of losses)/d(logits) = softmax - one_hot, in place over the chunk's
                    # logits (one pass); the losses from it. The 1/n of the mean is applied in
                    # backward, to the small gradients, not to this chunk
                    grad = softmax_chunk(h, w, t, rows, losses[start : start + chunk])
                else:
                    log_probs = torch.log_softmax(F.linear(h, w).float(), dim=-1)
                    losses[start : start + chunk] = -log_probs.gather(1, t[:, None]).squeeze(1)
                    grad = log_probs.exp_()
                    grad[rows, t] -= 1.0
                    del log_probs
                if not (want_weight or want_hidden):  # evaluation: the losses alone
                    del grad
                    continue
                grad = grad.to(compute)  # a cast only off the CPU under low precision
                if want_weight:
                    if accumulator.dtype != compute:  # low precision off the CPU
                        grad_weight += grad.T @ h
                    elif start == 0:
                        torch.mm(grad.T, h, out=accumulator)
                    else:
                        accumulator.addmm_(grad.T, h)
                if want_hidden:
                    grad_hidden[start : start + chunk] = grad @ w
                # freed before the next chunk's logits are allocated, not after
                del grad
        if want_weight and in_buffer:
            widen_in_place(grad_weight, compute)
        # kept as attributes, not saved tensors, so that backward holds the only reference and
        # autograd can adopt the weight gradient as `.grad` instead of copying it
        ctx.grads = (grad_hidden, grad_weight)
        ctx.n, ctx.weight_dtype = n, weight.dtype
        if not z_loss:
            ctx.mark_non_differentiable(losses, z_sum)
            return losses.mean(), losses, z_sum
        z = z_loss * z_sum / n
        ctx.mark_non_differentiable(losses, z)
        return losses.mean() + z, losses, z

    @staticmethod
    def backward(ctx, grad_loss, _grad_losses, _grad_z):  # noqa: ANN001, ANN205
        grad_hidden, grad_weight = ctx.grads
        ctx.grads = None
        scale = grad_loss / ctx.n  # the mean over tokens
        if grad_hidden is not None:
            grad_hidden = grad_hidden.mul_(scale.to(grad_hidden.dtype))
        if grad_weight is not None:
            grad_weight = grad_weight.mul_(scale).to(ctx.weight_dtype)
        return grad_hidden, grad_weight, None, None, None, None, None
