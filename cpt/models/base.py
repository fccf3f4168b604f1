"""What every model family shares: running the blocks, and the loss head.

A family defines its blocks (`self.layers`), `hidden_states` and `head_weight`; this class adds
the options that trade compute for memory or speed without changing the result: activation
checkpointing per block, `torch.compile` per block (with a fallback), and the chunked loss.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from cpt.models.attention import BACKENDS, Documents
from cpt.models.loss import chunk_tokens, lm_loss

log = logging.getLogger(__name__)


class CausalLM(nn.Module):
    """`forward(input_ids)` gives logits; `forward(input_ids, targets=...)` gives the loss."""

    layers: nn.ModuleList
    loss_chunk: int | None = None  # tokens per chunk of the loss; None: plain full logits
    activation_checkpointing: bool = False  # recompute each block's activations in backward

    def __init__(self, config: Any, attention: str) -> None:
        super().__init__()
        if attention not in BACKENDS:
            raise ValueError(f"attention backend {attention!r} unknown; expected one of {BACKENDS}")
        self.config = config

    @property
    def head_weight(self) -> torch.Tensor:
        raise NotImplementedError

    def hidden_states(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        segment_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        raise NotImplementedError

    def set_loss(self, loss: str) -> None:
        """`chunked` (default: no full logits in memory) or `plain` (the reference)."""
        if loss not in ("chunked", "plain"):
            raise ValueError(f"loss {loss!r} unknown; expected chunked or plain")
        self.loss_chunk = chunk_tokens(self.config.vocab_size) if loss == "chunked" else None

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        segment_ids: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits, or with `targets` (mean loss, per-token losses); ids restart per document."""
        hidden = self.hidden_states(input_ids, position_ids, segment_ids)
        if targets is None:
            return F.linear(hidden, self.head_weight)
        return lm_loss(hidden, self.head_weight, targets, self.loss_chunk)

    def run_blocks(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        segment_ids: torch.Tensor | None,
    ) -> torch.Tensor:
        documents = None if segment_ids is None else Documents(segment_ids)
        recompute = self.activation_checkpointing and torch.is_grad_enabled()
        for layer in self.layers:
            if recompute:
                x = checkpoint(layer, x, cos, sin, documents, use_reentrant=False)
            else:
                x = layer(x, cos, sin, documents)
        return x

    def compile_blocks(self, example: torch.Tensor, context: object | None = None) -> bool:
        """`torch.compile` every block; on failure run eager with one clear message.

        Inductor fails on some set-ups (seen on CPUs with pure-bf16 weights), and it fails at
        the first call rather than at `compile()`, so one forward and backward of the first
        block on `example` (`[batch, seq]` token ids, the training shape) is tried here, inside
        `context` (the trainer's precision context), before any training step.
        """
        for layer in self.layers:
            layer.compile(dynamic=False)
        try:
            with context if context is not None else contextlib.nullcontext():
                self._trial_step(example)
        except Exception as err:  # Inductor raises many types; every one means: do not compile
            for layer in self.layers:
                layer._compiled_call_impl = None  # back to eager, same parameters
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            log.warning(
                "model.compile: torch.compile failed (%s: %s); training continues without it",
                type(err).__name__,
                first[:300],
            )
            return False
        return True

    def _trial_step(self, example: torch.Tensor) -> None:
        layer = self.layers[0]
        x = self.hidden_input(example).detach().requires_grad_(True)
        position_ids = torch.arange(example.shape[1], device=example.device)[None]
        cos, sin = self.rotary(position_ids, x.dtype)
        layer(x, cos, sin, None).float().square().mean().backward()
        for param in layer.parameters():
            param.grad = None

    def hidden_input(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The embeddings of `input_ids`: what the first block receives."""
        raise NotImplementedError
