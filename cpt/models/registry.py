"""One place that maps a model family to its config and module classes."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cpt.models.gpt_neox import GPTNeoX, GPTNeoXConfig
from cpt.models.llama import Llama, LlamaConfig

FAMILIES = {"gpt_neox": (GPTNeoXConfig, GPTNeoX), "llama": (LlamaConfig, Llama)}
ModelConfig = GPTNeoXConfig | LlamaConfig


def config_from_dict(arch: dict[str, Any]) -> ModelConfig:
    """A config from `to_dict()` output; dicts written before families existed are GPT-NeoX."""
    family = arch.get("family", "gpt_neox")
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; expected one of {list(FAMILIES)}")
    return FAMILIES[family][0].from_dict(arch)


def build_model(config: ModelConfig, attention: str = "sdpa") -> nn.Module:
    return FAMILIES[config.family][1](config, attention=attention)


def matmul_parameters(config: ModelConfig) -> int:
    """The weights that take part in a matmul per token: every linear layer's, the output head
    included (also when tied to the input embedding, whose own use is a lookup); no biases or
    norm gains. Counted on a model built on the meta device: no memory, no formula to drift."""
    with torch.device("meta"):
        model = build_model(config)
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
