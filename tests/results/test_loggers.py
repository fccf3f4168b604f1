"""A real multirun grid: joblib launcher, wandb offline per job, collection, and the notebooks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cpt.analysis.wandb_files import offline_runs, read_run

REPO = Path(__file__).resolve().parents[2]


def test_wandb_offline_run_per_job_grouped_by_sweep(sweep):
    finished = [p.parent for p in sweep.glob("*/summary.json")]
    assert len(finished) == 2
    for job in finished:
        runs = list((job / "wandb").glob("offline-run-*"))
        assert len(runs) == 1 and len(list(runs[0].glob("*.wandb"))) == 1
        record = next(runs[0].glob("*.wandb")).read_bytes()
        assert sweep.name.encode() in record  # group: the sweep folder's name
        assert b"max_lr=0.001" in record  # name and tags: the job's overrides


def test_offline_runs_hold_the_flat_summary_and_the_overrides(sweep):
    """Read from the run's own files: every summary.json number under the tidy table's column
    name, and every override as a top-level config key beside the nested config."""
    from cpt.results.columns import summary_columns

    runs = offline_runs(sweep)
    assert len(runs) == 2
    for folder in runs:
        run = read_run(folder)
        summary = json.loads((folder.parent.parent / "summary.json").read_text())
        flat = summary_columns(summary)
        for key in (
            "final/val/upstream/loss",
            "initial/val/upstream/loss",
            "forgetting/upstream",
            "gap/upstream/peak",
            "gap/upstream/recovery_step",
            "gap/upstream/area",
            "tokens/downstream",
            "final/task/next_line_downstream/acc_norm",
        ):
            want = flat[key]  # a gap that never recovered is None in both
            assert run.summary[key] == (want if want is None else pytest.approx(want)), key
        assert run.summary["forgetting/upstream"] == pytest.approx(
            summary["final_val_loss"]["upstream"] - summary["initial_val_loss"]["upstream"]
        )
        assert run.config["optim.max_lr"] == 0.001 == run.config["optim"]["max_lr"]
        assert run.config["callbacks.replay.fraction"] in (0.0, 0.5)
        assert "trainer.max_steps=4" in run.config["overrides"]
        assert run.exit_code == 0
