"""`cpt.plan`: the numbers a run will use, before it runs, and equal to what the run then does."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from cpt.config import ConfigError
from cpt.planning import PlanOptions, plan_run
from cpt.train import run
from tests.conftest import compose_train

REPO = Path(__file__).resolve().parents[1]


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


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        (["schedule.warmup=0.001", "trainer.max_steps=100"], "schedule.warmup: 0.001 rounds to 0"),
        (
            ["data.train=upstream", "data.domains.upstream.max_tokens=2048"],
            "data.domains.upstream: the run draws 1000.0 epochs",
        ),
        (["model=pythia-1b", "data.micro_batch_size=64", "data.seq_len=2048"], "~"),
        (["schedule=infinite", "schedule.cooldown=0"], "schedule.cooldown: 0 steps: the LR drops"),
    ],
)
def test_problems_visible_before_running(overrides, problem, tmp_path):
    cfg = compose_train([*overrides, f"output_dir={tmp_path}"])
    found = plan_run(cfg, PlanOptions(), overrides)["problems"]
    assert any(p.startswith(problem) or problem in p for p in found), found


def test_a_bad_config_gets_no_plan(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "cpt.plan", "schedule.warmup=5000", f"plan.dir={tmp_path / 'p'}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: schedule.warmup: 5000 steps are longer than the run (1000 steps)"
    ]
    assert not (tmp_path / "p").exists()
    with pytest.raises(ConfigError, match="^plan.mfu"):
        PlanOptions(mfu=2.0)
