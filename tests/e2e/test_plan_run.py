"""`cpt.plan`: the numbers a run will use, before it runs, and equal to what the run then does."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from cpt.run.planning import PlanOptions, plan_run
from cpt.train import run

REPO = Path(__file__).resolve().parents[2]


def logged(out: str, key: str) -> dict[int, float]:
    with (Path(out) / "metrics.csv").open() as handle:
        return {int(r["step"]): float(r[key]) for r in csv.DictReader(handle) if r.get(key)}


@pytest.mark.parametrize(
    "schedule",
    [
        ["schedule=infinite", "schedule.warmup=2", "schedule.cooldown=4", "schedule.anneal=3"],
        ["schedule=wsd", "schedule.warmup=0.2", "schedule.decay=3", "schedule.min_lr_ratio=0.1"],
    ],
)
def test_the_plan_is_what_the_run_does(tiny_run, schedule):
    cfg = tiny_run(
        *schedule,
        "callbacks=cpt",
        "data.train=downstream",
        "callbacks.replay.fraction=0.5",
        "callbacks.replay.end_fraction=0.1",
        "trainer.max_steps=12",
        "trainer.accumulate_grad_batches=2",
    )
    plan = plan_run(cfg, PlanOptions(), [])
    summary = run(cfg)
    assert plan["total_steps"] == summary["steps"] == 12
    assert plan["total_tokens"] == summary["tokens"] == summary["geometry"]["total_tokens"]
    assert plan["tokens_per_source"] == summary["tokens_per_source"]
    lrs = logged(cfg.output_dir, "train/lr")
    planned = dict(plan["lr"])
    assert set(lrs) == set(range(12)) and set(lrs) <= set(planned)  # every step is in the plan
    assert [lrs[s] for s in range(12)] == pytest.approx([planned[s] for s in range(12)], rel=1e-6)
    fractions = logged(cfg.output_dir, "replay/fraction_target")
    planned_fraction = dict(plan["replay_fraction"])
    assert [fractions[s] for s in sorted(fractions)] == pytest.approx(
        [planned_fraction[s] for s in sorted(fractions)]
    )
    # the phases tile the run and their tokens add up
    assert [(p["first_step"], p["last_step"]) for p in plan["phases"]][0][0] == 0
    assert sum(p["steps"] for p in plan["phases"]) == 12
    per_phase = [sum(p["tokens_per_source"].values()) for p in plan["phases"]]
    assert sum(per_phase) == plan["total_tokens"]
