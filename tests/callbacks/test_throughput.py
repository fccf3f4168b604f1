"""The CPT techniques as callbacks: re-warming and optimizer states, replay, stability gap, drift."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from cpt.callbacks.throughput import flops_per_token, model_flops_per_token
from cpt.models.presets import config_from_name
from cpt.train import run


def test_flops_per_token():
    assert flops_per_token(1000, 2, 8, 16) == 6 * 1000 + 12 * 2 * 8 * 16


@pytest.mark.parametrize("preset", ["tiny", "tiny-llama"])
def test_flops_per_token_equal_torchs_own_count(preset):
    """An independent count: torch's FlopCounterMode over one forward and backward (eager
    attention and the plain loss, whose every matmul it sees; causal attention counted whole)."""
    from torch.utils.flop_counter import FlopCounterMode

    from cpt.models.registry import build_model

    config = config_from_name(preset)
    model = build_model(config, attention="eager")
    model.set_loss("plain")
    ids = torch.randint(0, config.vocab_size, (2, 65))
    with FlopCounterMode(display=False) as counter:
        loss, _ = model(ids[:, :-1], None, None, ids[:, 1:])
        loss.backward()
    assert model_flops_per_token(config, 64) == counter.get_total_flops() / (2 * 64)


def test_logged_mfu_is_the_measured_rate_over_the_peak(tiny_run):
    cfg = tiny_run("callbacks.throughput.peak_tflops=1", "callbacks.throughput.window=2")
    run(cfg)
    with (Path(cfg.output_dir) / "metrics.csv").open() as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("perf/mfu")]
    assert rows
    per_token = model_flops_per_token(config_from_name("tiny"), cfg.data.seq_len)
    for r in rows:
        rate = float(r["perf/tokens_per_s"]) * per_token
        assert float(r["perf/mfu"]) == pytest.approx(rate / 1e12, rel=1e-6)
