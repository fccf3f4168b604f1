"""`make reproduce`'s report on real seeded sweeps: tables per shift, verdicts, figures, the docs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from cpt.reproduce import reports
from tests.conftest import SMALL_DATA

REPO = Path(__file__).resolve().parents[2]


def grid(folder: Path, data_dir: Path, *overrides: str) -> None:
    """A twin's real `-m` grid, shrunk to a few steps from scratch (no upstream model needed)."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cpt.train",
            "-m",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            f"hydra.sweep.dir={folder}",
            "init=scratch",
            "debug=fast",
            "logger=csv",
            f"data.dir={data_dir}",
            *SMALL_DATA,
            "trainer.max_steps=4",
            "callbacks.stability_gap.dense=[[4,1]]",
            "callbacks.stability_gap.batches=1",
            "callbacks.task_eval.limit=8",
            "seed=1,2",
            "shift=strong,weak",
            *overrides,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
def test_the_gupta_report_judges_each_shift_from_its_seeds(tmp_path, data_dir, monkeypatch):
    out = tmp_path / "gupta2023"
    grid(
        out / "grid",
        data_dir,
        "experiment=gupta2023_rewarm_cpu",
        "optim.max_lr=2e-3,4e-3",
        "schedule.warmup=0.0,0.01",
    )
    grid(out / "constant", data_dir, "experiment=gupta2023_constant_cpu")
    docs = tmp_path / "docs"
    docs.mkdir()
    monkeypatch.setattr(reports, "DOCS", docs)
    text = reports.gupta2023(out)

    by_seed = pd.read_csv(out / "grid" / "runs_by_seed.csv")
    assert len(by_seed) == 8 and set(by_seed["n"]) == {2}  # 2 LRs x 2 warm-ups x 2 shifts
    assert {"final/val/downstream/loss/mean", "final/val/downstream/loss/ci95"} <= set(by_seed)
    # a claim per shift, each with a verdict and its numbers
    for shift in ("strong", "weak"):
        rows = [line for line in text.splitlines() if f"| {shift} shift | **" in line]
        assert len(rows) >= 4, text
        assert all("(95 %, paired, 2 seeds)" in row or "95 % ±" in row for row in rows), rows
    # the points the shrunk grid lacks (max LR 1e-3) leave their claims out, not wrong
    assert "adapts more" not in text
    assert "Re-warming ends lower downstream than a constant LR" in text
    # figures per shift, saved and copied small into the docs
    for name in ("rewarming_strong.png", "rewarming_weak.png", "stability_gap_weak.png"):
        assert (out / name).is_file() and f"{name}" in text
        assert 0 < (docs / "figures" / f"gupta2023_{name}").stat().st_size < 200_000
    assert "wall times add up to" in (out / "results.md").read_text()
