"""Models: readable PyTorch implementations, a preset table, and the Hugging Face bridge."""

from cpt.models.gpt_neox import GPTNeoX, GPTNeoXConfig
from cpt.models.hf import CheckpointError, from_hf, to_hf
from cpt.models.llama import Llama, LlamaConfig
from cpt.models.presets import PRESETS, config_from_name, preset_names
from cpt.models.registry import build_model, config_from_dict

__all__ = [
    "PRESETS",
    "CheckpointError",
    "GPTNeoX",
    "GPTNeoXConfig",
    "Llama",
    "LlamaConfig",
    "build_model",
    "config_from_dict",
    "config_from_name",
    "from_hf",
    "preset_names",
    "to_hf",
]
