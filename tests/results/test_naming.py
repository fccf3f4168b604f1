"""A real multirun grid: joblib launcher, wandb offline per job, collection, and the notebooks."""

from __future__ import annotations

from pathlib import Path

from cpt.analysis.wandb_files import offline_runs, read_run

REPO = Path(__file__).resolve().parents[2]


SWEPT = {"max_lr", "fraction"}


def test_job_names_hold_only_what_the_sweep_varies(sweep):
    """Folder and wandb run name: `<n>_max_lr=...,fraction=...`; the overrides every job shares
    (data, steps, callbacks) stay out of it, in the config and the tags."""
    jobs = sorted(p.parent.parent for p in sweep.glob("*/.hydra/overrides.yaml"))
    assert len(jobs) == 4
    for job in jobs:
        number, _, name = job.name.partition("_")
        assert number.isdigit() and {item.split("=")[0] for item in name.split(",")} == SWEPT
    for folder in offline_runs(sweep):
        run = read_run(folder)
        job = folder.parent.parent
        assert run.name == job.name and run.group == sweep.name
        assert "data.domains.upstream.max_docs=40" in run.tags and "trainer.max_steps=4" in run.tags


def test_a_fixed_value_holding_commas_stays_out_of_the_job_name():
    """A quoted path with `=` and `,` (a job folder of another sweep) is one item, not three."""
    from cpt.results.naming import items, varying

    dirname = (
        "mitigation=quality,reference='ckpt:/runs/0_a=none,seed=1,shift=strong/last.ckpt',seed=2"
    )
    assert items(dirname) == [
        "mitigation=quality",
        "reference='ckpt:/runs/0_a=none,seed=1,shift=strong/last.ckpt'",
        "seed=2",
    ]
    assert (
        varying(dirname, frozenset({"seed", "shift", "mitigation"})) == "mitigation=quality,seed=2"
    )
    assert items("tasks=[a,b],x={k: 1, j: 2},seed=1") == ["tasks=[a,b]", "x={k: 1, j: 2}", "seed=1"]
