"""A real multirun grid: joblib launcher, wandb offline per job, collection, and the notebooks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from cpt.analysis.collect import collect
from cpt.analysis.notebooks import NOTEBOOKS, execute
from tests.conftest import CONF, SMALL_DATA

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, data_dir) -> Path:
    """2 max LRs x 2 replay fractions, one max LR invalid: 2 jobs finish, 2 fail."""
    folder = tmp_path_factory.mktemp("sweep") / "grid"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cpt.train",
            "-m",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            f"hydra.sweep.dir={folder}",
            "debug=fast",
            "logger=wandb",
            f"data.dir={data_dir}",
            *SMALL_DATA,
            "data.train=downstream",
            "callbacks=cpt",
            "callbacks.stability_gap.batches=1",
            "trainer.max_steps=4",
            "optim.max_lr=1e-3,-1",
            "callbacks.replay.fraction=0.0,0.5",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**__import__("os").environ, "WANDB_MODE": "offline"},
    )
    assert result.returncode != 0  # Hydra reports the failed jobs at the end
    assert "optim.max_lr: expected a positive learning rate" in result.stderr + result.stdout
    return folder


def test_collect_lists_every_job_with_overrides_and_metrics(sweep):
    runs_csv, curves_csv, rows = collect(sweep)
    runs = pd.read_csv(runs_csv)
    assert len(runs) == 4 and sorted(runs["status"]) == ["failed", "failed", "finished", "finished"]
    assert set(runs["callbacks.replay.fraction"]) == {0.0, 0.5}
    finished = runs[runs["status"] == "finished"]
    assert set(finished["optim.max_lr"]) == {1e-3}
    assert (
        finished["final_loss/upstream"].notna().all()
        and finished["gap/upstream/peak"].notna().all()
    )
    failed = runs[runs["status"] == "failed"]
    assert failed["error"].str.contains("optim.max_lr").all()
    assert all(str(r).split("_", 1)[1] for r in runs["run"])  # folders named from the overrides
    curves = pd.read_csv(curves_csv)
    assert set(curves.columns) == {"run", "step", "tokens", "domain", "metric", "value"}
    assert {"loss", "ppl", "gap_loss", "train_loss"} <= set(curves["metric"])


def test_wandb_offline_run_per_job_grouped_by_sweep(sweep):
    finished = [p.parent for p in sweep.glob("*/summary.json")]
    assert len(finished) == 2
    for job in finished:
        runs = list((job / "wandb").glob("offline-run-*"))
        assert len(runs) == 1 and len(list(runs[0].glob("*.wandb"))) == 1
        record = next(runs[0].glob("*.wandb")).read_bytes()
        assert sweep.name.encode() in record  # group: the sweep folder's name
        assert b"max_lr=0.001" in record  # name and tags: the job's overrides


@pytest.mark.parametrize("notebook", ["rewarming", "replay", "stability_gap"])
def test_notebooks_run_headless_on_the_table(sweep, notebook, tmp_path):
    collect(sweep)
    executed = execute(NOTEBOOKS / f"{notebook}.ipynb", sweep, out=tmp_path / f"{notebook}.ipynb")
    assert executed.is_file()
    figure = {
        "rewarming": "rewarming.png",
        "replay": "replay_frontier.png",
        "stability_gap": "stability_gap.png",
    }
    assert (sweep / figure[notebook]).stat().st_size > 5_000


def test_the_figures_draw_the_collected_numbers(sweep):
    """What the notebooks plot is the table's data: one point per finished run on the frontier,
    one line per finished run and domain with that run's curve."""
    from cpt.analysis import plots

    collect(sweep)
    runs, curves = plots.load(sweep)
    finished = runs[runs["status"] == "finished"]
    frontier = plots.plot_replay_frontier(runs).axes[0]
    drawn = {tuple(p) for line in frontier.lines for p in line.get_xydata().tolist()}
    assert drawn == set(
        zip(finished["final_loss/upstream"].tolist(), finished["final_loss/downstream"].tolist())
    )
    rewarming = plots.plot_rewarming(runs, curves)
    for ax, domain in zip(rewarming.axes, ("upstream", "downstream")):
        assert len(ax.lines) == len(finished)
        for line, (_, row) in zip(ax.lines, finished.iterrows()):
            want = curves[
                (curves["run"] == row["run"])
                & (curves["domain"] == domain)
                & (curves["metric"] == "loss")
            ]
            assert line.get_ydata().tolist() == want["value"].tolist()
            assert line.get_xdata().tolist() == want["tokens"].tolist()


def test_committed_notebooks_have_no_outputs():
    import nbformat

    for path in NOTEBOOKS.glob("*.ipynb"):
        nb = nbformat.read(str(path), as_version=4)
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), path


def test_slurm_launcher_composes_with_submitit_parameters():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "hydra/launcher=slurm",
                "hydra.launcher.partition=gpu",
                "hydra.launcher.nodes=2",
            ],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert (
        launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    )
    assert (
        launcher.partition,
        launcher.nodes,
        launcher.gpus_per_node,
        launcher.tasks_per_node,
    ) == ("gpu", 2, 8, 8)
    assert launcher.timeout_min == 1440
