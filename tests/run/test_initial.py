"""The GPT-NeoX implementation against transformers, the preset table and the HF bridge."""

from __future__ import annotations

import pytest

from cpt.models import CheckpointError, config_from_name
from cpt.run.initial import check_agreement

# Published parameter counts (total, without embeddings) of the Pythia suite.
PYTHIA_PARAMS = {
    "pythia-70m": (70_426_624, 18_915_328),
    "pythia-160m": (162_322_944, 85_056_000),
    "pythia-410m": (405_334_016, 302_311_424),
    "pythia-1b": (1_011_781_632, 805_736_448),
    "pythia-1.4b": (1_414_647_808, 1_208_602_624),
    "pythia-2.8b": (2_775_208_960, 2_517_652_480),
    "pythia-6.9b": (6_857_302_016, 6_444_163_072),
    "pythia-12b": (11_846_072_320, 11_327_027_200),
}


def test_preset_must_agree_with_checkpoint():
    with pytest.raises(CheckpointError, match="hidden_size 512 != 768"):
        check_agreement(
            "pythia-70m", config_from_name("pythia-70m"), config_from_name("pythia-160m"), "x"
        )
