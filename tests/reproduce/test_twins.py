"""Verdicts follow from the seeds' intervals; generated sections replace only themselves."""

from __future__ import annotations

from pathlib import Path

COLUMN = "final/val/downstream/loss"


def test_the_chained_runs_use_the_seeds_the_twins_sweep():
    import yaml

    from cpt.reproduce.twins import SEEDS

    scale = yaml.safe_load((Path(__file__).parents[2] / "conf" / "scale" / "cpu.yaml").read_text())
    swept = [int(s) for s in str(scale["hydra"]["sweeper"]["params"]["seed"]).split(",")]
    assert list(SEEDS) == swept and len(swept) >= 3


def test_the_chained_runs_loop_over_the_configured_shifts():
    from cpt.reproduce.twins import SHIFTS

    conf = Path(__file__).parents[2] / "conf" / "shift"
    assert sorted(SHIFTS) == sorted(p.stem for p in conf.glob("*.yaml"))
