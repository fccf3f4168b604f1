"""`cpt.plan`: the numbers a run will use, before it runs, and equal to what the run then does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # a fresh process indexing lm-eval's 15k tasks for the recipe's task list
def test_paper_recipe_plans_from_the_command_line_without_data(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cpt.plan",
            "-m",
            "experiment=ibrahim2024_replay",
            "callbacks.replay.fraction=0.0,0.05",
            f"plan.dir={tmp_path / 'plan'}",
            "plan.accelerator=H200",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1].endswith(str(tmp_path / "plan"))
    runs = json.loads((tmp_path / "plan" / "plan.json").read_text())
    assert (tmp_path / "plan" / "plan.png").stat().st_size > 0
    assert [sorted(r["overrides"]) for r in runs] == [
        ["callbacks.replay.fraction=0.0", "experiment=ibrahim2024_replay"],
        ["callbacks.replay.fraction=0.05", "experiment=ibrahim2024_replay"],
    ]
    for r in runs:
        assert {"tokens_per_step", "total_steps", "total_tokens", "lr", "tokens_per_source"} <= set(
            r
        )
        assert r["tokens_per_step"] == 1104 * 2048 and r["total_steps"] == 132685
        assert r["accumulation_by_devices"]["8"] == 23
        assert r["peak_tflops"] == 989.0 and r["parameters"] == 405_334_016
    assert runs[0]["tokens_per_source"]["upstream"] == 0
    replayed = runs[1]["tokens_per_source"]["upstream"] / runs[1]["total_tokens"]
    assert replayed == pytest.approx(0.05, abs=1e-4)
    # the cosine's boundaries: warm-up ends at max LR, the run ends at min LR
    lr = dict(runs[1]["lr"])
    warmup = runs[1]["phases"][0]
    assert warmup["steps"] == round(0.01 * 132685)
    assert lr[warmup["last_step"] + 1] == pytest.approx(3e-4)
    assert lr[132685] == pytest.approx(3e-5)


def test_a_recipe_grid_is_the_runs_hydra_would_start(tmp_path):
    from cpt.plan import jobs

    grid = jobs(["-m", "experiment=gupta2023_rewarm"])
    assert len(grid) == 12 and len({tuple(j) for j in grid}) == 12
    narrowed = jobs(["-m", "experiment=gupta2023_rewarm", "optim.max_lr=3e-4"])
    assert len(narrowed) == 4  # a command-line value replaces the recipe's list
