"""The Llama family (Llama 2/3/3.x, TinyLlama, OpenLLaMA, Qwen 2.x, Mistral) as one readable module.

RMSNorm, SwiGLU MLP, rotary embeddings over the whole head with a configurable base and the
Llama 3 frequency scaling, grouped-query attention, optional QKV bias (Qwen 2) and tied input and
output embeddings. Parameter names are the Hugging Face ones without the `model.` prefix, so
import and export are renamings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cpt.models.attention import attend
from cpt.models.base import ArchConfig, CausalLM
from cpt.models.norms import RMSNorm
from cpt.models.rotary import RotaryEmbedding, apply_rotary, rotary_frequencies


@dataclass(frozen=True)
class LlamaConfig(ArchConfig):
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    max_position_embeddings: int = 4096
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = (
        None  # llama3: factor, low/high_freq_factor, original_max_position_embeddings
    )
    qkv_bias: bool = False  # Qwen 2: biases on q, k and v
    o_bias: bool = False
    mlp_bias: bool = False
    tie_word_embeddings: bool = False
    head_dim: int | None = None
    initializer_range: float = 0.02
    model_type: str = "llama"  # llama | qwen2 | mistral: how config.json is written back

    family = "llama"
    label = "Llama"

    def __post_init__(self) -> None:
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads {self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads {self.num_key_value_heads}"
            )
        rope_type = (self.rope_scaling or {}).get("rope_type", "default")
        if rope_type not in ("default", "llama3"):
            raise ValueError(
                f"rope_type {rope_type!r} is not supported; expected default or llama3"
            )

    @property
    def head_size(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads

    def num_parameters(self, embeddings: bool = True) -> int:
        d, f, v, hd = self.hidden_size, self.intermediate_size, self.vocab_size, self.head_size
        q, kv = self.num_attention_heads * hd, self.num_key_value_heads * hd
        attention = d * q + 2 * d * kv + q * d + (q + 2 * kv) * self.qkv_bias + d * self.o_bias
        mlp = 3 * d * f + (2 * f + d) * self.mlp_bias
        body = self.num_hidden_layers * (attention + mlp + 2 * d) + d
        if not embeddings:
            return body
        return body + v * d * (1 if self.tie_word_embeddings else 2)


def rope_frequencies(config: LlamaConfig) -> torch.Tensor:
    """Inverse frequencies, with Llama 3's scaling of the long wavelengths when configured."""
    inv_freq = rotary_frequencies(config.head_size, config.rope_theta)
    scaling = config.rope_scaling or {}
    if scaling.get("rope_type", "default") != "llama3":
        return inv_freq
    factor = scaling["factor"]
    low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
    old_context = scaling["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old_context / low, old_context / high
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_context / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return torch.where(medium, smoothed, scaled)


class Attention(nn.Module):
    def __init__(self, config: LlamaConfig, backend: str) -> None:
        super().__init__()
        d, hd = config.hidden_size, config.head_size
        self.heads, self.kv_heads, self.head_size = (
            config.num_attention_heads,
            config.num_key_value_heads,
            hd,
        )
        self.q_proj = nn.Linear(d, self.heads * hd, bias=config.qkv_bias)
        self.k_proj = nn.Linear(d, self.kv_heads * hd, bias=config.qkv_bias)
        self.v_proj = nn.Linear(d, self.kv_heads * hd, bias=config.qkv_bias)
        self.o_proj = nn.Linear(self.heads * hd, d, bias=config.o_bias)
        self.backend = backend

    def forward(self, x, cos, sin, documents):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.heads, self.head_size)
        k = self.k_proj(x).view(b, t, self.kv_heads, self.head_size)
        v = self.v_proj(x).view(b, t, self.kv_heads, self.head_size)
        # rotary in [b, t, heads, head_size]; attention takes [b, heads, t, head_size] views
        q, k = apply_rotary(q, cos, sin).transpose(1, 2), apply_rotary(k, cos, sin).transpose(1, 2)
        v = v.transpose(1, 2)
        if self.kv_heads != self.heads:  # grouped-query attention: each kv head serves a group
            repeat = self.heads // self.kv_heads
            k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
        y = attend(q, k, v, self.backend, documents)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, -1))


class MLP(nn.Module):
    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        d, f, bias = config.hidden_size, config.intermediate_size, config.mlp_bias
        self.gate_proj = nn.Linear(d, f, bias=bias)
        self.up_proj = nn.Linear(d, f, bias=bias)
        self.down_proj = nn.Linear(f, d, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, config: LlamaConfig, backend: str) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config, backend)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MLP(config)

    def forward(self, x, cos, sin, documents):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, documents)
        return x + self.mlp(self.post_attention_layernorm(x))


class Llama(CausalLM):
    """A causal LM: `forward(input_ids)` returns logits `[batch, seq, vocab]`."""

    def __init__(self, config: LlamaConfig, attention: str = "sdpa") -> None:
        super().__init__(config, attention)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(
            Block(config, attention) for _ in range(config.num_hidden_layers)
        )
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.tie_weights()
        self.rotary = RotaryEmbedding(self.rotary_inv_freq())
        if not any(p.is_meta for p in self.parameters()):
            self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=self.config.initializer_range)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=self.config.initializer_range)
            elif isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)

    def rotary_inv_freq(self) -> torch.Tensor:
        return rope_frequencies(self.config)

    def tie_weights(self) -> None:
        self.lm_head.weight = self.embed_tokens.weight

    @property
    def inv_freq(self) -> torch.Tensor:
        return self.rotary.inv_freq

    @property
    def head_weight(self) -> torch.Tensor:
        return self.lm_head.weight

    def hidden_input(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embed_tokens(input_ids)

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)
