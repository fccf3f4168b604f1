"""LR schedules: the papers' formulas at their boundaries."""

from __future__ import annotations

import math

import pytest

from cpt.schedules import build, constant, resolve_warmup, warmup_cosine

MAX, MIN_RATIO, TOTAL, WARM = 3e-4, 0.1, 1000, 20


def lr(step):
    return warmup_cosine(
        step, max_lr=MAX, total_steps=TOTAL, warmup_steps=WARM, min_lr_ratio=MIN_RATIO
    )


def test_warmup_starts_at_zero_and_is_linear():
    assert lr(0) == 0.0
    assert lr(WARM // 2) == pytest.approx(MAX / 2)


def test_end_of_warmup_is_max_lr():
    assert lr(WARM) == pytest.approx(MAX)
    assert lr(WARM - 1) == pytest.approx(MAX * (WARM - 1) / WARM)


def test_cosine_midpoint_and_end_of_decay():
    mid = WARM + (TOTAL - WARM) // 2
    assert lr(mid) == pytest.approx(MAX * MIN_RATIO + (MAX - MAX * MIN_RATIO) / 2)
    assert lr(TOTAL) == pytest.approx(MAX * MIN_RATIO)
    assert lr(TOTAL + 500) == pytest.approx(MAX * MIN_RATIO)  # stays at min after the run


def test_cosine_follows_gupta_formula():
    for step in (WARM, 137, 512, 999):
        t = (step - WARM) / (TOTAL - WARM)
        expected = MAX * MIN_RATIO + (MAX - MAX * MIN_RATIO) / 2 * (1 + math.cos(math.pi * t))
        assert lr(step) == pytest.approx(expected)


def test_monotone_after_warmup():
    values = [lr(s) for s in range(WARM, TOTAL + 1)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_no_warmup_starts_at_max():
    assert warmup_cosine(
        0, max_lr=MAX, total_steps=TOTAL, warmup_steps=0, min_lr_ratio=0.1
    ) == pytest.approx(MAX)


def test_warmup_fraction_and_steps_agree():
    assert resolve_warmup(0.02, TOTAL) == WARM
    by_fraction = build(
        "cosine", max_lr=MAX, total_steps=TOTAL, warmup=0.02, min_lr_ratio=MIN_RATIO
    )
    by_steps = build("cosine", max_lr=MAX, total_steps=TOTAL, warmup=WARM, min_lr_ratio=MIN_RATIO)
    assert [by_fraction(s) for s in range(0, TOTAL, 7)] == [by_steps(s) for s in range(0, TOTAL, 7)]


def test_constant_baseline():
    assert [constant(s, max_lr=3e-5) for s in (0, 10, 10_000)] == [3e-5] * 3
    schedule = build("constant", max_lr=3e-5, total_steps=100, warmup=0, min_lr_ratio=1.0)
    assert schedule(0) == schedule(99) == 3e-5


@pytest.mark.parametrize("warmup", [-1, 1.0, 1.5, 2000])
def test_bad_warmup_is_rejected(warmup):
    with pytest.raises(ValueError, match="warmup"):
        resolve_warmup(warmup, TOTAL)


def test_unknown_schedule_is_rejected():
    with pytest.raises(ValueError, match="unknown schedule"):
        build("linear-ish", max_lr=MAX, total_steps=TOTAL, warmup=0, min_lr_ratio=0.1)
