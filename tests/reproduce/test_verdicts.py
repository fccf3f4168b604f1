"""Verdicts follow from the seeds' intervals; generated sections replace only themselves."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cpt.analysis.seeds import by_seed
from cpt.reproduce import verdicts as v

COLUMN = "final/val/downstream/loss"


def point(values: list[float], **keys: object) -> pd.Series:
    """A grid point of runs_by_seed.csv from its seeds' values."""
    runs = pd.DataFrame(
        {
            "run": range(len(values)),
            "status": "finished",
            "seed": range(len(values)),
            COLUMN: values,
        }
    )
    for key, value in keys.items():
        runs[key] = value
    return by_seed(runs, [*keys, "seed"]).iloc[0]


def test_a_lower_point_reproduces_only_when_the_intervals_separate():
    low, high = point([3.90, 3.91, 3.92]), point([4.00, 4.01, 4.02])
    assert v.lower(low, high, COLUMN)[0] == v.REPRODUCES
    assert v.lower(high, low, COLUMN)[0] == v.FAILS
    noisy = point([3.80, 4.10, 3.95])  # mean 3.95, but three seeds spread over 0.3
    assert v.lower(noisy, high, COLUMN)[0] == v.OPEN
    verdict, numbers = v.lower(point([3.9]), high, COLUMN)
    assert verdict == "not resolved (one seed)" and "3.900" in numbers


@given(
    st.lists(st.floats(3, 6), min_size=2, max_size=5),
    st.lists(st.floats(3, 6), min_size=2, max_size=5),
)
def test_swapping_the_sides_of_a_lower_claim_swaps_its_verdict(a, b):
    forward, _ = v.lower(point(a), point(b), COLUMN)
    backward, _ = v.lower(point(b), point(a), COLUMN)
    flip = {v.REPRODUCES: v.FAILS, v.FAILS: v.REPRODUCES, v.OPEN: v.OPEN}
    assert backward == flip[forward]


def test_the_same_within_a_margin_needs_the_whole_interval_inside_it():
    a = point([3.900, 3.902, 3.901])
    assert v.same(a, point([3.905, 3.906, 3.904]), COLUMN)[0] == v.REPRODUCES
    assert v.same(a, point([3.990, 3.991, 3.992]), COLUMN)[0] == v.FAILS  # 0.09 apart
    assert v.same(a, point([3.85, 3.95, 3.92]), COLUMN)[0] == v.OPEN  # too noisy to tell


def test_no_worse_accepts_better_and_equal_but_not_worse_beyond_the_margin():
    a = point([3.900, 3.902, 3.901])
    assert v.no_worse(a, point([4.100, 4.101, 4.102]), COLUMN)[0] == v.REPRODUCES  # better
    assert v.no_worse(a, point([3.905, 3.906, 3.904]), COLUMN)[0] == v.REPRODUCES  # the same
    assert v.no_worse(a, point([3.800, 3.801, 3.802]), COLUMN)[0] == v.FAILS  # 0.1 worse
    assert v.no_worse(a, point([3.85, 3.95, 3.90]), COLUMN)[0] == v.OPEN


def test_a_rise_is_judged_against_the_margin():
    assert v.rises(point([0.5, 0.6, 0.55]), COLUMN)[0] == v.REPRODUCES
    assert v.rises(point([0.001, 0.002, 0.0015]), COLUMN)[0] == v.FAILS  # real, but negligible
    assert v.rises(point([0.0, 0.08, 0.01]), COLUMN)[0] == v.OPEN


def test_derived_columns_measure_the_gap_and_a_tasks_drop():
    runs = pd.DataFrame(
        {
            "gap/upstream/initial": [4.0],
            "gap/upstream/peak": [4.5],
            "gap/upstream/final": [4.2],
            "task_gap/next_line_downstream/acc_norm/initial": [0.40],
            "task_gap/next_line_downstream/acc_norm/peak": [0.31],  # the lowest point
        }
    )
    out = v.derive(runs)
    assert out["rise/upstream"][0] == pytest.approx(0.5)
    assert out["fall/upstream"][0] == pytest.approx(0.3)
    assert out["drop/next_line_downstream"][0] == pytest.approx(0.09)
