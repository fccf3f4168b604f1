"""`callbacks.stability_gap`: its fixed held-out windows are spread over each domain's whole
validation set, not its first documents alone."""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st

from cpt.callbacks.stability_gap import StabilityGap, spread
from cpt.data.datamodule import CPTDataModule
from cpt.run.build import build
from cpt.train import run


@given(st.integers(1, 64), st.integers(0, 5000))
def test_spread_takes_evenly_spaced_distinct_indices(count, total):
    picked = spread(count, total)
    assert picked == sorted(set(picked)) and len(picked) == min(count, total)
    assert all(0 <= i < total for i in picked)
    if total > count >= 2:
        gaps = [b - a for a, b in zip(picked, picked[1:])]
        assert picked[0] == 0 and picked[-1] == total - 1 and max(gaps) - min(gaps) <= 1


def test_the_monitor_reads_windows_from_the_whole_held_out_set(tiny_run):
    cfg = tiny_run(
        "callbacks=gap", "callbacks.stability_gap.batches=2", "trainer.max_steps=1", out="gap"
    )
    built = build(cfg)
    run(cfg, built)
    (monitor,) = [c for c in built.callbacks if isinstance(c, StabilityGap)]
    data = CPTDataModule(built.config.data, built.geometry, cfg.seed)
    data.prepare_data()
    data.setup()
    for (name, batches), loader in zip(monitor._fixed, data.val_dataloader(), strict=True):
        windows = loader.dataset
        read = torch.cat([b["input_ids"] for b in batches])
        picked = spread(2 * loader.batch_size, len(windows))
        assert len(windows) > 2 * loader.batch_size, name  # more held out than the monitor reads
        expected = torch.stack([windows[i]["input_ids"] for i in picked])
        assert torch.equal(read, expected), name
        assert torch.equal(read[-1], windows[len(windows) - 1]["input_ids"])  # the set's last
