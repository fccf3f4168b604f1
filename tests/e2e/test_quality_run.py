"""The quality mitigation: windows chosen by a reference model's loss, cached, then trained on."""

from __future__ import annotations

from pathlib import Path

from cpt.train import run


def test_quality_rule_with_a_checkpoint_reference_trains_on_the_selection(tiny_run, caplog):
    upstream = tiny_run("trainer.max_steps=2", out="up")
    run(upstream)
    reference = Path(upstream.output_dir) / "checkpoints" / "last.ckpt"
    cfg = tiny_run(
        "data.train=downstream",
        f"data.domains.downstream.quality.reference=ckpt:{reference}",
        "data.domains.downstream.quality.keep=0.5",
        out="cpt",
    )
    with caplog.at_level("INFO", logger="cpt.train"):
        summary = run(cfg)
    assert summary["steps"] == 3
    assert any("quality: training on" in r.getMessage() for r in caplog.records)
    assert list(Path(cfg.data.dir, "quality").glob("quality-downstream-*.npy"))
