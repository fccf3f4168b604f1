"""GPT-NeoX, the Pythia architecture, as one readable PyTorch module.

Parameter names and the fused QKV layout (per head: query, key, value) follow the Hugging Face
checkpoints, so import and export are a renaming of the top-level prefix and nothing else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

import cpt.models.fast as fast
from cpt.models.attention import Documents, attend
from cpt.models.base import ArchConfig, CausalLM
from cpt.models.rotary import RotaryEmbedding, apply_rotary, rotary_frequencies


@dataclass(frozen=True)
class GPTNeoXConfig(ArchConfig):
    """Architecture of a GPT-NeoX model; field names are the Hugging Face `config.json` ones."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int = 2048
    rotary_pct: float = 0.25
    rotary_emb_base: float = 10000.0
    use_parallel_residual: bool = True
    layer_norm_eps: float = 1e-5
    hidden_act: str = "gelu"
    attention_bias: bool = True
    tie_word_embeddings: bool = False
    initializer_range: float = 0.02

    family = "gpt_neox"
    label = "GPT-NeoX"

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by "
                f"num_attention_heads {self.num_attention_heads}"
            )
        if not 0.0 < self.rotary_pct <= 1.0:
            raise ValueError(f"rotary_pct must be in (0, 1], got {self.rotary_pct}")
        if self.hidden_act not in fast.ACTIVATIONS:
            raise ValueError(
                f"hidden_act {self.hidden_act!r} is not supported; expected one of "
                f"{sorted(fast.ACTIVATIONS)}"
            )

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def rotary_ndims(self) -> int:
        return int(self.head_size * self.rotary_pct)

    def num_parameters(self, embeddings: bool = True) -> int:
        """Parameter count from the shapes alone (no model is built)."""
        d, f, v = self.hidden_size, self.intermediate_size, self.vocab_size
        b = 1 if self.attention_bias else 0
        per_layer = (
            2 * 2 * d + (3 * d * d + b * 3 * d) + (d * d + b * d) + (d * f + f) + (f * d + d)
        )
        body = self.num_hidden_layers * per_layer + 2 * d
        if not embeddings:
            return body
        return body + v * d * (1 if self.tie_word_embeddings else 2)


class Attention(nn.Module):
    def __init__(self, config: GPTNeoXConfig, backend: str) -> None:
        super().__init__()
        d, bias = config.hidden_size, config.attention_bias
        self.num_heads = config.num_attention_heads
        self.head_size = config.head_size
        self.backend = backend
        self.query_key_value = nn.Linear(d, 3 * d, bias=bias)
        self.dense = nn.Linear(d, d, bias=bias)

    def forward(
        self,
        x: torch.Tensor,
        norm: nn.LayerNorm,
        cos: torch.Tensor,
        sin: torch.Tensor,
        documents: Documents | None,
    ) -> torch.Tensor:
        """Attention of `norm(x)`."""
        b, t, _ = x.shape
        # Hugging Face layout: per head, [query | key | value] of head_size each
        qkv = fast.norm_linear(x, norm, self.query_key_value)  # query_key_value(norm(x))
        qkv = qkv.view(b, t, self.num_heads, 3 * self.head_size)
        q, k, v = qkv.chunk(3, dim=-1)  # [b, t, heads, head_size]
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        v = v.contiguous()  # attention keeps v for backward: not the whole fused qkv behind it
        y = attend(*(z.transpose(1, 2) for z in (q, k, v)), self.backend, documents)
        return self.dense(y.transpose(1, 2).reshape(b, t, -1))


class MLP(nn.Module):
    def __init__(self, config: GPTNeoXConfig) -> None:
        super().__init__()
        self.dense_h_to_4h = nn.Linear(config.hidden_size, config.intermediate_size)
        self.dense_4h_to_h = nn.Linear(config.intermediate_size, config.hidden_size)
        self.activation = config.hidden_act

    def forward(self, x: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
        """The MLP of `norm(x)`: dense_4h_to_h(act(dense_h_to_4h(norm(x))))."""
        h = fast.norm_linear(x, norm, self.dense_h_to_4h)
        return fast.act_linear(h, self.activation, self.dense_4h_to_h)


class Block(nn.Module):
    def __init__(self, config: GPTNeoXConfig, backend: str) -> None:
        super().__init__()
        self.use_parallel_residual = config.use_parallel_residual
        self.input_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_attention_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = Attention(config, backend)
        self.mlp = MLP(config)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        documents: Documents | None,
    ) -> torch.Tensor:
        attn = self.attention(x, self.input_layernorm, cos, sin, documents)
        if self.use_parallel_residual:
            # Pythia: x + attn(ln1(x)) + mlp(ln2(x))
            return x + attn + self.mlp(x, self.post_attention_layernorm)
        x = x + attn
        return x + self.mlp(x, self.post_attention_layernorm)


class GPTNeoX(CausalLM):
    """A causal LM: `forward(input_ids)` returns logits `[batch, seq, vocab]`."""

    def __init__(self, config: GPTNeoXConfig, attention: str = "sdpa") -> None:
        super().__init__(config, attention)
        self.embed_in = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(
            Block(config, attention) for _ in range(config.num_hidden_layers)
        )
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.embed_out = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.tie_weights()
        self.rotary = RotaryEmbedding(self.rotary_inv_freq())
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Normal(initializer_range) for inputs; GPT-NeoX's 'wang_init' for residual outputs."""
        c = self.config
        std = c.initializer_range
        out_std = 2.0 / c.num_hidden_layers / math.sqrt(c.hidden_size)
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                is_out = name.endswith(("attention.dense", "mlp.dense_4h_to_h"))
                nn.init.normal_(module.weight, std=out_std if is_out else std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=std)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def rotary_inv_freq(self) -> torch.Tensor:
        return rotary_frequencies(self.config.rotary_ndims, self.config.rotary_emb_base)

    def tie_weights(self) -> None:
        self.embed_out.weight = self.embed_in.weight

    @property
    def head_weight(self) -> torch.Tensor:
        return self.embed_out.weight

    def hidden_input(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embed_in(input_ids)

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_layer_norm(x)
