"""Normalisation layers of the model families, and which parameters weight decay skips."""

from __future__ import annotations

import torch
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


NORMS = (nn.LayerNorm, RMSNorm)


def weight_decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW parameter groups: matrices and embeddings decay; biases and norm gains do not.

    Decided by module type, not by shape: under FSDP the parameters are flat shards when the
    optimizer is configured.
    """
    exempt = set()
    for module in model.modules():
        if isinstance(module, NORMS):
            exempt.update(id(p) for p in module.parameters(recurse=False))
        elif isinstance(module, nn.Linear) and module.bias is not None:
            exempt.add(id(module.bias))
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (no_decay if id(param) in exempt else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
