"""Models: readable PyTorch implementations, a preset table, and the Hugging Face bridge."""

from cpt.models.gpt_neox import GPTNeoX, GPTNeoXConfig
from cpt.models.hf import CheckpointError, from_hf, to_hf
from cpt.models.presets import PRESETS, config_from_name, preset_names

__all__ = [
    "PRESETS",
    "CheckpointError",
    "GPTNeoX",
    "GPTNeoXConfig",
    "config_from_name",
    "from_hf",
    "preset_names",
    "to_hf",
]
