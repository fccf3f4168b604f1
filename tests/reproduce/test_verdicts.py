"""Verdicts follow from the seeds' intervals (paired where arms share seeds, as scipy computes
them); generated sections replace only themselves."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from scipy import stats

from cpt.reproduce import verdicts as v

COLUMN = "final/val/downstream/loss"


def point(values: list[float], seeds: list[int] | None = None) -> pd.DataFrame:
    """A grid point: its runs, one per seed (seeds 1, 2, ... unless given)."""
    seeds = list(range(1, len(values) + 1)) if seeds is None else seeds
    return pd.DataFrame(
        {"run": [f"r{s}" for s in seeds], "status": "finished", "seed": seeds, COLUMN: values}
    )


def test_a_lower_point_reproduces_only_when_the_intervals_separate():
    low, high = point([3.90, 3.91, 3.92]), point([4.00, 4.01, 4.02])
    assert v.lower(low, high, COLUMN)[0] == v.REPRODUCES
    assert v.lower(high, low, COLUMN)[0] == v.FAILS
    noisy = point([3.80, 4.10, 3.95])  # mean 3.95, three seeds spread over 0.3 ...
    assert v.lower(noisy, high, COLUMN, pair=False)[0] == v.OPEN
    shifted = point([4.02, 4.00, 4.015])  # ... but each seed 0.05-0.2 below the other arm's seed
    assert v.lower(noisy, shifted, COLUMN, pair=False)[0] == v.OPEN
    verdict, numbers = v.lower(noisy, point([3.85, 4.16, 4.01]), COLUMN)
    assert verdict == v.REPRODUCES and "paired, 3 seeds" in numbers
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
    n = min(len(a), len(b))  # paired over the seeds both ran
    if a[:n] == b[:n]:  # equal seed by seed: neither side is lower
        assert forward == backward == v.FAILS
    else:
        assert backward == flip[forward]


def test_arms_equal_seed_by_seed_refute_a_lower_claim():
    """Both arms' early rise clipped at zero (0.000 +- 0.000 against 0.000 +- 0.000): the interval
    is [0, 0], which excludes "A is lower" as an interval above zero does, not "not resolved"."""
    zero = point([0.0, 0.0, 0.0])
    assert v.lower(zero, point([0.0, 0.0, 0.0]), COLUMN)[0] == v.FAILS
    assert v.lower(zero, point([0.0, 0.0, 0.01]), COLUMN)[0] == v.OPEN


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


def test_pairing_uses_the_seeds_both_arms_ran():
    a = point([3.90, 3.95, 4.00], seeds=[1, 2, 3])
    b = point([4.01, 4.10, 9.99], seeds=[2, 3, 4])  # seed 1 failed on B, seed 4 only there
    interval = v.paired(v.values(a, COLUMN), v.values(b, COLUMN))
    assert interval.statistic == "paired, 2 seeds"
    assert interval.mean == pytest.approx(((3.95 - 4.01) + (4.00 - 4.10)) / 2)
    assert v.lower(point([3.9]), point([4.0]), COLUMN)[0] == v.ONE_SEED


samples = st.lists(st.floats(-5, 5, allow_subnormal=False), min_size=2, max_size=8)


@given(samples, st.lists(st.floats(-0.5, 0.5, allow_subnormal=False), min_size=2, max_size=8))
def test_the_paired_interval_is_scipys(a, noise):
    n = min(len(a), len(noise))
    a = np.array(a[:n])
    b = a - np.array(noise[:n])  # B = A - noise: the seeds' pairing carries most of the spread
    assume(np.std(a - b) > 1e-6)
    got = v.paired(pd.Series(a), pd.Series(b))
    expected = stats.ttest_rel(a, b).confidence_interval(0.95)
    assert got.mean - got.half == pytest.approx(expected.low, abs=1e-9)
    assert got.mean + got.half == pytest.approx(expected.high, abs=1e-9)


@given(samples, samples)
def test_the_welch_interval_is_scipys(a, b):
    assume(np.std(a) > 1e-6 and np.std(b) > 1e-6)
    got = v.welch(pd.Series(a), pd.Series(b))
    expected = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert got.mean - got.half == pytest.approx(expected.low, abs=1e-9)
    assert got.mean + got.half == pytest.approx(expected.high, abs=1e-9)


@given(samples)
def test_the_one_sample_interval_is_scipys(a):
    assume(np.std(a) > 1e-6)
    got = v.one_sample(pd.Series(a))
    expected = stats.ttest_1samp(a, 0.0).confidence_interval(0.95)
    assert got.mean - got.half == pytest.approx(expected.low, abs=1e-9)
    assert got.mean + got.half == pytest.approx(expected.high, abs=1e-9)


@given(st.lists(st.floats(-0.3, 0.3, allow_subnormal=False), min_size=3, max_size=6))
def test_pairing_never_widens_the_interval_when_the_seeds_share_their_noise(offsets):
    """Arms that share a seed share its noise (data order, start): the paired interval of a
    constant offset plus small per-arm noise is narrower than the unpaired one."""
    shared = np.array(offsets) * 10  # the seed's own effect, large
    a, b = 4.0 + shared + np.array(offsets) * 0.1, 4.05 + shared
    assume(np.std(shared) > 1e-3)
    pair = v.paired(pd.Series(a), pd.Series(b))
    alone = v.welch(pd.Series(a), pd.Series(b))
    assert pair.half < alone.half


def test_at_most_is_a_rise_mirrored():
    assert v.at_most(point([0.001, 0.002, 0.0015]), COLUMN)[0] == v.REPRODUCES
    assert v.at_most(point([0.10, 0.11, 0.12]), COLUMN)[0] == v.FAILS
    assert v.at_most(point([0.0, 0.08, 0.01]), COLUMN)[0] == v.OPEN
