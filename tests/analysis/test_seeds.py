"""Runs that differ only by seed: aggregated per grid point, drawn as bands and error bars."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from cpt.analysis.seeds import by_seed, differs, t95
from tests.helpers import seed_runs

SWEPT = ["callbacks.replay.fraction", "seed"]


def test_each_grid_point_gets_mean_std_and_a_student_t_interval():
    runs = seed_runs({0.0: [4.0, 4.2, 4.4], 0.25: [3.9, 4.0, 4.1], 0.5: [3.7]})
    table = by_seed(runs, SWEPT).set_index("callbacks.replay.fraction")
    assert table["n"].to_dict() == {0.0: 3, 0.25: 3, 0.5: 1}  # the failed run is not a seed
    row = table.loc[0.0]
    assert row["final/val/upstream/loss/mean"] == pytest.approx(4.2)
    assert row["final/val/upstream/loss/std"] == pytest.approx(0.2)
    assert row["final/val/upstream/loss/ci95"] == pytest.approx(4.302653 * 0.2 / math.sqrt(3))
    assert math.isnan(table.loc[0.5, "final/val/upstream/loss/ci95"])  # one run: no interval
    assert "seed/mean" not in table.columns and "steps/mean" in table.columns


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-10, 10, allow_nan=False), min_size=2, max_size=12))
def test_the_interval_is_the_t_interval_of_the_mean(values):
    table = by_seed(seed_runs({0.1: values}, failed=0), SWEPT)
    n = len(values)
    half = stats.t.ppf(0.975, n - 1) * np.std(values, ddof=1) / math.sqrt(n)
    assert table["final/val/upstream/loss/mean"][0] == pytest.approx(np.mean(values), abs=1e-9)
    assert table["final/val/upstream/loss/ci95"][0] == pytest.approx(half, abs=1e-9)
    assert t95(n) == pytest.approx(stats.t.ppf(0.975, n - 1))


def test_differs_only_beyond_both_intervals():
    assert differs(4.0, 0.1, 4.5, 0.1) is True
    assert differs(4.0, 0.3, 4.2, 0.3) is False
    assert differs(4.0, math.nan, 4.5, 0.1) is None


def test_a_result_no_seed_has_is_missing_not_an_error():
    """A gap that never recovered has no recovery step in any seed: NaN, as for one seed."""
    runs = pd.DataFrame(
        {
            "run": ["a", "b", "c"],
            "status": "finished",
            "seed": [1, 2, 3],
            "gap/upstream/recovery_step": [math.nan] * 3,
            "final/val/upstream/loss": [4.0, 4.1, 4.2],
        }
    )
    row = by_seed(runs, ["seed"]).iloc[0]
    assert math.isnan(row["gap/upstream/recovery_step/mean"])
    assert math.isnan(row["gap/upstream/recovery_step/ci95"])
    assert row["final/val/upstream/loss/mean"] == pytest.approx(4.1)
