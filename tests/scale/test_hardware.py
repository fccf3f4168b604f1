"""Training composed through the real Hydra config, on CPU, for a few steps."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cpt.config import ConfigError
from cpt.train import run

REPO = Path(__file__).resolve().parents[2]


def test_bf16_where_the_gpu_lacks_it(tiny_run, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    with pytest.raises(
        ConfigError, match="^trainer.precision: bf16-mixed requested but this GPU has no bf16"
    ):
        run(tiny_run("trainer.precision=bf16-mixed", "trainer.accelerator=gpu"))


def test_flash_in_fp32_is_refused_where_flash_could_run(monkeypatch):
    """The check itself (on a CPU the missing GPU is reported first)."""
    import cpt.scale.hardware as distributed
    from cpt.models.options import ModelOptions

    monkeypatch.setattr(distributed, "flash_available", lambda: None)
    with pytest.raises(
        ValueError, match=r"^model.attention: flash runs in bf16/fp16 only, but trainer.precision"
    ):
        distributed.check_hardware(
            ModelOptions(attention="flash"), {"precision": "32-true", "accelerator": "cpu"}
        )
    distributed.check_hardware(  # and accepts bf16
        ModelOptions(attention="flash"), {"precision": "bf16-mixed", "accelerator": "cpu"}
    )
