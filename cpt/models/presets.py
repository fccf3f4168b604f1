"""Name-keyed table of model presets: every Pythia size, plus `tiny` for tests and the demo.

Shapes are those of the published `EleutherAI/pythia-*` `config.json` files (all: rotary_pct 0.25,
rotary base 10000, parallel residual, 2048 positions, untied embeddings).
"""

from __future__ import annotations

from typing import Any

from cpt.models.gpt_neox import GPTNeoXConfig


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


def preset_names() -> list[str]:
    return list(PRESETS)


def config_from_name(name: str, **overrides: Any) -> GPTNeoXConfig:
    """The preset's architecture, with any field replaced by `overrides`."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; expected one of {preset_names()}")
    return GPTNeoXConfig(**{**PRESETS[name], **overrides})
