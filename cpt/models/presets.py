"""Name-keyed table of model presets: every Pythia size, the common Llama-family models, and
`tiny` / `tiny-llama` for tests and the demo.

Shapes are those of the published `EleutherAI/pythia-*` `config.json` files (all: rotary_pct 0.25,
rotary base 10000, parallel residual, 2048 positions, untied embeddings).
"""

from __future__ import annotations

from typing import Any

from cpt.models.gpt_neox import GPTNeoXConfig
from cpt.models.llama import LlamaConfig


def _pythia(layers: int, hidden: int, heads: int, vocab: int = 50304) -> dict[str, Any]:
    return dict(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
    )


PRESETS: dict[str, dict[str, Any]] = {
    "pythia-14m": _pythia(6, 128, 4),
    "pythia-31m": _pythia(6, 256, 8),
    "pythia-70m": _pythia(6, 512, 8),
    "pythia-160m": _pythia(12, 768, 12),
    "pythia-410m": _pythia(24, 1024, 16),
    "pythia-1b": _pythia(16, 2048, 8),
    "pythia-1.4b": _pythia(24, 2048, 16),
    "pythia-2.8b": _pythia(32, 2560, 32),
    "pythia-6.9b": _pythia(32, 4096, 32, vocab=50432),
    "pythia-12b": _pythia(36, 5120, 40, vocab=50688),
    # A few million parameters: trains in minutes on two CPU cores (the demo and the tests).
    "tiny": dict(
        vocab_size=4096,
        hidden_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=512,
        max_position_embeddings=512,
    ),
}


def _llama(vocab, hidden, layers, heads, kv_heads, ffn, positions, **extra) -> dict[str, Any]:
    return dict(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        intermediate_size=ffn,
        max_position_embeddings=positions,
        **extra,
    )


# The Llama family, from the published config.json files.
LLAMA_PRESETS: dict[str, dict[str, Any]] = {
    "tinyllama-1.1b": _llama(32000, 2048, 22, 32, 4, 5632, 2048),
    "open-llama-3b": _llama(32000, 3200, 26, 32, 32, 8640, 2048, rms_norm_eps=1e-6),
    "llama-2-7b": _llama(32000, 4096, 32, 32, 32, 11008, 4096),
    "llama-3-8b": _llama(128256, 4096, 32, 32, 8, 14336, 8192, rope_theta=500000.0),
    "llama-3.2-1b": _llama(
        128256,
        2048,
        16,
        32,
        8,
        8192,
        131072,
        rope_theta=500000.0,
        tie_word_embeddings=True,
        head_dim=64,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 32.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
    ),
    "qwen2.5-0.5b": _llama(
        151936,
        896,
        24,
        14,
        2,
        4864,
        32768,
        rms_norm_eps=1e-6,
        rope_theta=1000000.0,
        tie_word_embeddings=True,
        qkv_bias=True,
        model_type="qwen2",
    ),
    # A few million parameters with grouped-query attention: tests and CPU runs.
    "tiny-llama": _llama(4096, 128, 4, 4, 2, 344, 512),
}


def preset_names() -> list[str]:
    return [*PRESETS, *LLAMA_PRESETS]


def config_from_name(name: str, **overrides: Any) -> GPTNeoXConfig | LlamaConfig:
    """The preset's architecture, with any field replaced by `overrides`."""
    if name in PRESETS:
        return GPTNeoXConfig(**{**PRESETS[name], **overrides})
    if name in LLAMA_PRESETS:
        return LlamaConfig(**{**LLAMA_PRESETS[name], **overrides})
    raise ValueError(f"unknown model preset {name!r}; expected one of {preset_names()}")
