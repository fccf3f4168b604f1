"""A real multirun grid: joblib launcher, wandb offline per job, collection, and the notebooks."""

from __future__ import annotations

import csv
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


def test_a_run_folder_keeps_its_wandb_run(tmp_path, monkeypatch):
    """A resumed or requeued run logs to the wandb run it started (its id in wandb-id.txt)."""
    from cpt.results.loggers import wandb_logger

    monkeypatch.setenv("WANDB_MODE", "offline")
    first = wandb_logger(project="cpt", save_dir=str(tmp_path))
    again = wandb_logger(project="cpt", save_dir=str(tmp_path))
    made = (tmp_path / "wandb-id.txt").read_text().strip()
    assert first._id == again._id == made and len(made) == 8
    other = wandb_logger(project="cpt", save_dir=str(tmp_path / "other"))
    assert other._id != made


def test_a_resumed_run_continues_metrics_csv_after_its_checkpoint(tmp_path):
    from cpt.results.loggers import CSVLogger, keep_metrics_until

    first = CSVLogger(save_dir=str(tmp_path), name="", version="")
    for step in range(6):
        first.log_metrics({"train/loss": float(step)}, step=step)
    first.save()
    keep_metrics_until(tmp_path, 3)  # a run killed after step 5 resumes from its step-3 checkpoint
    again = CSVLogger(save_dir=str(tmp_path), name="", version="")
    for step in (4, 5):
        again.log_metrics({"train/loss": 10.0 + step}, step=step)
    again.save()
    with (tmp_path / "metrics.csv").open() as handle:
        rows = [(int(r["step"]), float(r["train/loss"])) for r in csv.DictReader(handle)]
    assert rows == [(0, 0.0), (1, 1.0), (2, 2.0), (3, 3.0), (4, 14.0), (5, 15.0)]
