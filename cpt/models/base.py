"""What every model family shares: the config's dict form, the forward pass, the loss head.

A family defines its config (an `ArchConfig`), its blocks (`self.layers`), the embedding
(`hidden_input`), the final norm (`final_norm`), the rotary frequencies and `head_weight`; this
class runs them in order (`hidden_states`) and adds
the options that trade compute for memory or speed without changing the result: activation
checkpointing per block, `torch.compile` per block (with a fallback), and the chunked loss.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import asdict, fields
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from cpt.models.attention import BACKENDS, Documents
from cpt.models.loss import chunk_tokens, lm_loss, lm_loss_terms
from cpt.models.rotary import RotaryEmbedding

log = logging.getLogger(__name__)


class ArchConfig:
    """Mixin of the families' frozen config dataclasses: a plain dict form for checkpoints."""

    family: ClassVar[str]
    label: ClassVar[str]  # the family's name in messages

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, **asdict(self)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Any:
        values = {k: v for k, v in values.items() if k != "family"}
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown {cls.label} config keys: {sorted(unknown)}")
        return cls(**values)


class CausalLM(nn.Module):
    """`forward(input_ids)` gives logits; `forward(input_ids, targets=...)` gives the loss."""

    layers: nn.ModuleList
    rotary: RotaryEmbedding
    loss_chunk: int | None = None  # tokens per chunk of the loss; None: plain full logits
    z_loss: float = 0.0  # coefficient of the z-loss in training's loss (0: none)
    z_term: torch.Tensor | None = None  # the z-loss of the last forward with targets
    activation_checkpointing: bool = False  # recompute each block's activations in backward

    def __init__(self, config: Any, attention: str) -> None:
        super().__init__()
        if attention not in BACKENDS:
            raise ValueError(f"attention backend {attention!r} unknown; expected one of {BACKENDS}")
        self.config = config

    @property
    def head_weight(self) -> torch.Tensor:
        raise NotImplementedError

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def rotary_inv_freq(self) -> torch.Tensor:
        """The inverse frequencies of the rotated channels (from the config alone)."""
        raise NotImplementedError

    def tie_weights(self) -> None:
        """Make the output head share the input embedding's weight."""
        raise NotImplementedError

    def tie_and_materialize(self) -> None:
        """After weights were assigned into a meta-device model: tie again, rebuild the buffers."""
        if self.config.tie_word_embeddings:
            self.tie_weights()
        if self.rotary.inv_freq.is_meta:
            self.rotary = RotaryEmbedding(self.rotary_inv_freq())

    def hidden_states(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        segment_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Final-normed hidden states; kept apart so a loss can avoid materialising all logits."""
        _, t = input_ids.shape
        if t > self.config.max_position_embeddings:
            raise ValueError(
                f"sequence length {t} exceeds max_position_embeddings "
                f"{self.config.max_position_embeddings}"
            )
        if position_ids is None:
            position_ids = torch.arange(t, device=input_ids.device)[None]
        x = self.hidden_input(input_ids)
        cos, sin = self.rotary(position_ids, x.dtype)
        return self.final_norm(self.run_blocks(x, cos, sin, segment_ids))

    def set_loss(self, loss: str, z_loss: float = 0.0) -> None:
        """`chunked` (default: no full logits in memory) or `plain` (the reference); a z-loss of
        coefficient `z_loss` in training's loss (its last value in `z_term`)."""
        if loss not in ("chunked", "plain"):
            raise ValueError(f"loss {loss!r} unknown; expected chunked or plain")
        self.loss_chunk = chunk_tokens(self.config.vocab_size) if loss == "chunked" else None
        self.z_loss = float(z_loss)

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        segment_ids: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
        logits_at: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits, or with `targets` (mean loss, per-token losses); ids restart per document.

        `logits_at` (a boolean mask of `input_ids`' shape): the logits of those positions alone,
        `[count, vocab]` in row-major order; a scorer that needs a few positions of each row
        skips the output projection of the others (of a small model, a large share of it).
        """
        hidden = self.hidden_states(input_ids, position_ids, segment_ids)
        if logits_at is not None:
            hidden = hidden[logits_at.to(hidden.device)]
        if targets is None:
            return F.linear(hidden, self.head_weight)
        if not self.z_loss:
            return lm_loss(hidden, self.head_weight, targets, self.loss_chunk)
        loss, losses, self.z_term = lm_loss_terms(
            hidden, self.head_weight, targets, self.loss_chunk, self.z_loss
        )
        return loss, losses

    @torch.no_grad()
    def window_losses(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        segment_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean next-token loss of every window of `seq_len + 1` tokens (eval mode): `[batch]`.

        The keyword names are those of a batch of windows, so `window_losses(**batch)` scores one.
        """
        was_training = self.training
        self.eval()
        device = self.head_weight.device
        moved = [
            None if t is None else t.to(device) for t in (input_ids, position_ids, segment_ids)
        ]
        ids, positions, segments = moved
        try:
            _, per_token = self(ids[:, :-1], positions, segments, ids[:, 1:])
        finally:
            self.train(was_training)
        return per_token.mean(dim=1)

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
        if _sharded(self):  # a shard's weights exist only inside the model's own forward (FSDP)
            loss, _ = self(example, targets=example)
            loss.backward()  # every rank runs the trial, so the gradients' collectives match
            self.zero_grad(set_to_none=True)
            return
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


def _sharded(model: nn.Module) -> bool:
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())
