"""`make demo` end to end with a tiny budget: two real `cpt.train` runs, the table, the figure."""

from __future__ import annotations

import json

import pytest

from cpt.demo import main, table
from tests.conftest import SMALL_DATA


@pytest.mark.slow  # the demo end to end, short: CI's slow run
def test_demo_smoke(tmp_path, data_dir, capsys):
    summary = main(
        [
            "--out",
            str(tmp_path / "demo"),
            "--logger",
            "csv",
            "--pretrain-steps",
            "6",
            "--cpt-steps",
            "4",
            f"data.dir={data_dir}",
            "trainer.val_check_interval=3",
            "trainer.enable_progress_bar=false",
            *SMALL_DATA,
        ]
    )
    printed = capsys.readouterr().out
    assert "before CPT" in printed and "gap peak" in printed and "upstream" in printed
    assert set(summary["stability_gap"]) == {"upstream", "downstream"}
    tokens = summary["tokens_per_source"]
    assert tokens["upstream"] * 4 == tokens["upstream"] + tokens["downstream"]  # 25 % replay
    assert (tmp_path / "demo" / "cpt" / "stability_gap.png").is_file()
    pretrain = json.loads((tmp_path / "demo" / "pretrain" / "summary.json").read_text())
    # the CPT run starts from the pre-trained weights: its "before" is pre-training's "after"
    assert summary["initial_val_loss"] == pretrain["final_val_loss"]
    assert summary["init"].startswith("ckpt:") and summary["mixture"] == {
        "downstream": 0.75,
        "upstream": 0.25,
    }
    assert summary["steps"] == 4 and pretrain["steps"] == 6
    assert (tmp_path / "demo" / "val_loss.png").stat().st_size > 10_000


def test_table_layout():
    text = table(
        {
            "initial_val_loss": {"upstream": 3.0, "downstream": 5.5},
            "final_val_loss": {"upstream": 3.25, "downstream": 4.0},
        }
    )
    lines = text.splitlines()
    assert lines[2].split() == ["upstream", "3.000", "3.250", "+0.250"]
    assert lines[3].split() == ["downstream", "5.500", "4.000", "-1.500"]
