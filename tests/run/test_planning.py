"""`cpt.plan`: the numbers a run will use, before it runs, and equal to what the run then does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cpt.config import ConfigError
from cpt.run.planning import PlanOptions, plan_run
from tests.conftest import compose_train

REPO = Path(__file__).resolve().parents[2]


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
