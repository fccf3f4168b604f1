"""The CPT techniques as callbacks: re-warming and optimizer states, replay, stability gap, drift."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from cpt.callbacks.monitor import gap_metrics
from cpt.train import run
from tests.helpers import metric


# ---- a short CPT run with every callback -------------------------------------------------------
def test_cpt_run_with_every_callback(tiny_run, upstream_checkpoint):
    cfg = tiny_run(
        f"init=ckpt:{upstream_checkpoint}",
        "data.train=downstream",
        "callbacks=[cpt,weight_drift]",
        "callbacks.replay.fraction=0.25",
        "callbacks.stability_gap.dense=[[4,1]]",
        "callbacks.stability_gap.every=3",
        "callbacks.stability_gap.batches=2",
        "callbacks.weight_drift.every=2",
        "callbacks.throughput.peak_tflops=1",
        "trainer.max_steps=8",
        out="cpt",
    )
    summary = run(cfg)
    out = Path(cfg.output_dir)
    assert summary["tokens_per_source"] == {
        "downstream": 24 * 32,
        "upstream": 8 * 32,
    }  # 25 % replay
    fractions = [v for _, v in metric(cfg.output_dir, "replay/fraction")]
    assert len(fractions) == 8 and sum(fractions) / 8 == pytest.approx(0.25)
    gap = summary["stability_gap"]
    assert set(gap) == {"upstream", "downstream"}
    keys = {"initial", "peak", "peak_step", "recovery_step", "gap_area", "final", "forgetting"}
    for name, m in gap.items():
        assert keys | {"worst", "worst_step", "stderr", "within_noise"} == set(m)
        curve = metric(cfg.output_dir, f"stability_gap/{name}/loss")
        again = gap_metrics([s for s, _ in curve], [v for _, v in curve])  # from the logged curve
        assert {k: m[k] for k in keys} == pytest.approx({k: again[k] for k in keys}, nan_ok=True)
        for key in ("peak", "gap_area", "forgetting"):  # and what the callback logged at the end
            assert metric(cfg.output_dir, f"stability_gap/{name}/{key}")[-1][1] == pytest.approx(
                m[key]
            )
        assert 0 < m["stderr"] < 1
    steps = [s for s, _ in metric(cfg.output_dir, "stability_gap/upstream/loss")]
    assert steps == [0, 1, 2, 3, 4, 7, 8]  # dense then sparse, plus the last step
    assert gap["upstream"]["initial"] == pytest.approx(
        metric(cfg.output_dir, "stability_gap/upstream/loss")[0][1]
    )
    assert (out / "stability_gap.png").stat().st_size > 10_000
    assert summary["weight_drift"]["layers.0.attention"] > 0
    assert {"perf/tokens_per_s", "perf/mfu"} <= set(
        next(csv.DictReader((out / "metrics.csv").open()))
    )
    assert json.loads((out / "summary.json").read_text())["stability_gap"] == gap
