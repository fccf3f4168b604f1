"""The CPT techniques as callbacks: re-warming and optimizer states, replay, stability gap, drift."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cpt.callbacks.monitor import eval_steps, gap_metrics


# ---- stability-gap metrics on synthetic curves -------------------------------------------------
def test_gap_that_recovers_at_a_known_step():
    m = gap_metrics([0, 1, 2, 3, 4, 5], [2.0, 3.0, 4.0, 2.5, 2.0, 1.5])
    assert (m["initial"], m["peak"], m["peak_step"], m["recovery_step"], m["final"]) == (
        2.0,
        4.0,
        2,
        4,
        1.5,
    )
    assert m["gap_area"] == pytest.approx(0.5 + 1.5 + 1.25 + 0.25)  # trapezoids above 2.0


def test_gap_that_never_recovers():
    m = gap_metrics([0, 10, 20, 30], [2.0, 3.0, 2.8, 2.6])
    assert m["recovery_step"] is None and m["peak_step"] == 10
    assert m["gap_area"] == pytest.approx(10 * (1.0 + 0.8) / 2 + 10 * (0.8 + 0.6) / 2 + 0 + 5)


def test_no_gap():
    m = gap_metrics([0, 1, 2], [2.0, 1.9, 1.7])
    assert (m["peak"], m["peak_step"], m["recovery_step"], m["gap_area"]) == (2.0, 0, 0, 0.0)


def test_gap_area_counts_only_the_part_above_the_start():
    m = gap_metrics([0, 2], [1.0, 3.0])  # wait: crossing inside a segment
    assert m["gap_area"] == pytest.approx(2.0)
    crossing = gap_metrics([0, 2, 4], [1.0, 2.0, 0.0])  # up 1 then down to 1 below: triangle of 2
    assert crossing["gap_area"] == pytest.approx(1.0 + 0.5)
    assert crossing["recovery_step"] == 4


def test_the_gap_is_the_first_excursion_not_a_later_rise():
    """Guo et al.'s gap: up at step 10, back at step 20; the rise at step 30 is something else."""
    m = gap_metrics([0, 10, 20, 30], [2.0, 2.5, 1.9, 2.6])
    assert (m["peak"], m["peak_step"], m["recovery_step"]) == (2.5, 10, 20)
    assert (m["worst"], m["worst_step"]) == (2.6, 30)
    assert m["forgetting"] == pytest.approx(0.6)
    # a triangle up to step 10, then down to the crossing at 10 + 10 x 0.5 / 0.6
    assert m["gap_area"] == pytest.approx(10 * 0.5 / 2 + (10 * 0.5 / 0.6) * 0.5 / 2)


def test_an_accuracy_gap_is_a_drop():
    m = gap_metrics([0, 5, 10, 15, 20], [0.50, 0.40, 0.45, 0.55, 0.30], higher_is_better=True)
    assert (m["peak"], m["peak_step"], m["recovery_step"]) == (0.40, 5, 15)
    assert (m["worst"], m["worst_step"]) == (0.30, 20)
    assert m["forgetting"] == pytest.approx(-0.2)
    assert m["gap_area"] == pytest.approx(5 * 0.1 / 2 + 5 * (0.1 + 0.05) / 2 + 2.5 * 0.05 / 2)


def test_a_gap_within_the_monitors_noise_says_so():
    steps, losses = [0, 1, 2], [2.0, 2.01, 1.9]
    assert gap_metrics(steps, losses, stderrs=[0.02, 0.02, 0.02])["within_noise"] is True
    assert gap_metrics(steps, losses, stderrs=[0.001, 0.001, 0.001])["within_noise"] is False


@given(
    st.lists(st.floats(0.5, 5.0, allow_nan=False), min_size=2, max_size=30),
    st.lists(st.floats(0.5, 5.0, allow_nan=False), min_size=0, max_size=10),
    st.booleans(),
)
def test_what_comes_after_the_recovery_changes_nothing_of_the_gap(values, later, accuracy):
    steps = list(range(0, 5 * len(values), 5))
    m = gap_metrics(steps, values, higher_is_better=accuracy)
    sign = -1 if accuracy else 1
    assert m["gap_area"] >= 0 and sign * (m["peak"] - m["initial"]) >= 0
    if m["recovery_step"] not in (None, 0):
        assert m["recovery_step"] > m["peak_step"] > 0
        cut = steps.index(m["recovery_step"]) + 1
        longer = values[:cut] + later
        again = gap_metrics(list(range(0, 5 * len(longer), 5)), longer, higher_is_better=accuracy)
        gap = ("peak", "peak_step", "recovery_step")
        assert [again[k] for k in gap] == [m[k] for k in gap]
        assert again["gap_area"] == pytest.approx(m["gap_area"])
        between = values[steps.index(m["peak_step"]) : cut - 1]
        assert all(sign * (v - m["initial"]) > 0 for v in between)  # worse until it recovers


def test_dense_then_sparse_schedule():
    steps = eval_steps([[20, 1], [200, 5]], 50, 400)
    assert set(range(21)) <= steps and {25, 30, 195, 200, 250, 400} <= steps
    assert 21 not in steps and 205 not in steps and 260 not in steps
