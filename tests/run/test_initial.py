"""A preset named beside a checkpoint must describe the same network (cpt/run/initial.py)."""

from __future__ import annotations

import pytest

from cpt.models import CheckpointError, config_from_name
from cpt.run.initial import check_agreement


def test_preset_must_agree_with_checkpoint():
    with pytest.raises(CheckpointError, match="hidden_size 512 != 768"):
        check_agreement(
            "pythia-70m", config_from_name("pythia-70m"), config_from_name("pythia-160m"), "x"
        )
