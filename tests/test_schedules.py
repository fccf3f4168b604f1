"""LR schedules: the papers' formulas at every phase boundary, and continuity."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cpt.schedules import (
    SCHEDULES,
    ScheduleSpec,
    build,
    constant,
    resolve_warmup,
    warmup_cosine,
)

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


def test_no_warmup_starts_at_max():
    assert warmup_cosine(
        0, max_lr=MAX, total_steps=TOTAL, warmup_steps=0, min_lr_ratio=0.1
    ) == pytest.approx(MAX)


def test_warmup_fraction_and_steps_agree():
    assert resolve_warmup(0.02, TOTAL) == WARM
    by_fraction = build(ScheduleSpec("cosine", warmup=0.02), max_lr=MAX, total_steps=TOTAL)
    by_steps = build(ScheduleSpec("cosine", warmup=WARM), max_lr=MAX, total_steps=TOTAL)
    assert [by_fraction(s) for s in range(0, TOTAL, 7)] == [by_steps(s) for s in range(0, TOTAL, 7)]


def test_constant_baseline():
    assert [constant(s, max_lr=3e-5) for s in (0, 10, 10_000)] == [3e-5] * 3


def test_linear_and_inverse_sqrt():
    linear = build(
        ScheduleSpec("linear", warmup=100, min_lr_ratio=0.0), max_lr=1.0, total_steps=1100
    )
    assert (linear(100), linear(600), linear(1100)) == pytest.approx((1.0, 0.5, 0.0))
    inv = build(
        ScheduleSpec("inverse_sqrt", warmup=100, timescale=50), max_lr=1.0, total_steps=10_000
    )
    assert inv(100) == pytest.approx(1.0) and inv(250) == pytest.approx(0.5)  # 1/sqrt(1 + 150/50)


# Ibrahim et al.'s infinite schedule, computed by hand: T=1000, warm-up 10, cool-down 490 to
# c = 0.5, constant to 850, anneal over 150 to min 0.05 (max_lr 1).
INF = dict(
    warmup=10, cooldown=490, anneal=150, constant_lr_ratio=0.5, min_lr_ratio=0.05, timescale=10.0
)


@pytest.mark.parametrize("shape", ["cosine", "inverse_sqrt"])
def test_infinite_schedule_at_its_phase_boundaries(shape):
    f = build(ScheduleSpec("infinite", cooldown_shape=shape, **INF), max_lr=1.0, total_steps=1000)
    assert f(0) == 0.0 and f(5) == pytest.approx(0.5)
    assert f(10) == pytest.approx(1.0)  # end of warm-up: max_lr
    assert f(500) == pytest.approx(0.5)  # end of cool-down: c
    assert f(700) == pytest.approx(0.5) and f(850) == pytest.approx(
        0.5
    )  # constant until the anneal
    assert f(1000) == pytest.approx(0.05)  # anneal ends at min_lr
    k = math.log(0.5 / 0.05) / 150
    assert f(925) == pytest.approx(0.5 * math.exp(-k * 75))


def test_infinite_cooldown_shapes_by_hand():
    cos = build(
        ScheduleSpec("infinite", cooldown_shape="cosine", **INF), max_lr=1.0, total_steps=1000
    )
    assert cos(255) == pytest.approx(0.5 + 0.5 / 2 * (1 + math.cos(math.pi * 245 / 490)))
    inv = build(
        ScheduleSpec("infinite", cooldown_shape="inverse_sqrt", **INF), max_lr=1.0, total_steps=1000
    )

    def g(x):
        return 1 / math.sqrt(1 + 10 * x) - 1

    assert inv(255) == pytest.approx(1.0 + (0.5 - 1.0) * g(245 / 490) / g(1))
    # the inverse-sqrt cool-down drops faster early on than the cosine one
    assert inv(60) < cos(60)


@pytest.mark.parametrize("shape", ["linear", "cosine", "1-sqrt"])
def test_wsd(shape):
    f = build(
        ScheduleSpec("wsd", warmup=10, decay=200, decay_shape=shape, min_lr_ratio=0.1),
        max_lr=1.0,
        total_steps=1000,
    )
    assert f(10) == pytest.approx(1.0) and f(800) == pytest.approx(1.0)
    assert f(1000) == pytest.approx(0.1)
    if shape == "1-sqrt":
        assert f(850) == pytest.approx(0.1 + 0.9 * (1 - math.sqrt(0.25)))


@settings(max_examples=40, deadline=None)
@given(
    name=st.sampled_from(SCHEDULES),
    shape=st.sampled_from(["cosine", "inverse_sqrt"]),
    decay_shape=st.sampled_from(["linear", "cosine", "1-sqrt"]),
    total=st.integers(200, 3000),
    warmup=st.one_of(st.just(0.0), st.floats(0.1, 0.2)),  # phases of 0 or >= 20 steps
    cooldown=st.one_of(st.just(0.0), st.floats(0.1, 0.5)),
    anneal=st.one_of(st.just(0.0), st.floats(0.1, 0.25)),
)
def test_every_schedule_is_continuous(name, shape, decay_shape, total, warmup, cooldown, anneal):
    """No jump anywhere: the change over any step is at most 2.5 times the larger change of the
    steps beside it (a kink at a phase boundary passes, as do an exponential anneal of 20 steps or
    more and the 1-sqrt decay's first step, 2.41 times its second; a jump of twice the local slope
    does not). An infinite schedule without a
    cool-down drops from max_lr to its constant at once by definition (the plan says so)."""
    spec = ScheduleSpec(
        name,
        warmup=warmup,
        cooldown=cooldown,
        anneal=anneal,
        decay=anneal,
        cooldown_shape=shape,
        decay_shape=decay_shape,
        # the paper's timescale: with 100, a 50-step inverse-sqrt cool-down drops 42 % of its
        # way in its first step, 3.2 times its second (steep by design, not a jump)
        timescale=10.0,
        min_lr_ratio=0.1,
        constant_lr_ratio=1.0 if cooldown == 0 else 0.55,
    )
    f = build(spec, max_lr=1.0, total_steps=total)
    values = [f(s) for s in range(total + 1)]
    steps = [abs(b - a) for a, b in zip(values, values[1:])]
    for i in range(1, len(steps) - 1):
        assert steps[i] <= 2.5 * max(steps[i - 1], steps[i + 1]) + 1e-12, (
            i,
            values[i - 1 : i + 3],
        )
    assert all(0 <= v <= 1.0 for v in values)


def test_the_continuity_check_sees_a_jump():
    """The property above fails on a schedule with a step of twice its slope in it."""
    values = [1.0 - s / 1000 - (0.002 if s >= 300 else 0.0) for s in range(1000)]
    steps = [abs(b - a) for a, b in zip(values, values[1:])]
    assert any(steps[i] > 2.5 * max(steps[i - 1], steps[i + 1]) + 1e-12 for i in range(1, 998))


@pytest.mark.parametrize("warmup", [-1, 1.0, 1.5, 2000])
def test_bad_warmup_is_rejected(warmup):
    with pytest.raises(ValueError, match="warmup"):
        resolve_warmup(warmup, TOTAL)


def test_bad_specs_are_rejected():
    with pytest.raises(ValueError, match="unknown schedule"):
        build(ScheduleSpec("linear-ish"), max_lr=MAX, total_steps=TOTAL)
    with pytest.raises(ValueError, match="exceed the run"):
        build(
            ScheduleSpec("infinite", warmup=0.5, cooldown=0.4, anneal=0.2),
            max_lr=MAX,
            total_steps=TOTAL,
        )
    with pytest.raises(ValueError, match="decay_shape"):
        build(ScheduleSpec("wsd", decay_shape="exp"), max_lr=MAX, total_steps=TOTAL)


def test_phase_lengths_in_tokens():
    tokens_per_step = 16 * 128
    in_tokens = ScheduleSpec(
        "infinite",
        warmup=20 * tokens_per_step,
        cooldown=400 * tokens_per_step,
        anneal=0.15,
        unit="tokens",
    )
    in_steps = ScheduleSpec("infinite", warmup=20, cooldown=400, anneal=0.15)
    a = build(in_tokens, max_lr=1.0, total_steps=1000, tokens_per_step=tokens_per_step)
    b = build(in_steps, max_lr=1.0, total_steps=1000)
    assert [a(s) for s in range(0, 1001, 10)] == [b(s) for s in range(0, 1001, 10)]
    with pytest.raises(ValueError, match="tokens per optimizer step"):
        build(in_tokens, max_lr=1.0, total_steps=1000)


@pytest.mark.parametrize(
    "name", ["constant", "cosine", "linear", "inverse_sqrt", "infinite", "wsd"]
)
@pytest.mark.parametrize("shape", ["cosine", "inverse_sqrt"])
def test_every_schedule_is_the_same_in_steps_and_in_tokens(name, shape):
    """Integer lengths (and inverse_sqrt's timescale) convert; the infinite `a` has no unit."""
    tokens_per_step = 1104 * 2048
    steps = {"warmup": 10, "cooldown": 590, "anneal": 150, "decay": 200}
    timescale = 50 if name == "inverse_sqrt" else 10.0
    in_steps = ScheduleSpec(name, cooldown_shape=shape, timescale=timescale, **steps)
    in_tokens = ScheduleSpec(
        name,
        cooldown_shape=shape,
        timescale=timescale * tokens_per_step if name == "inverse_sqrt" else timescale,
        unit="tokens",
        **{k: v * tokens_per_step for k, v in steps.items()},
    )
    a = build(in_steps, max_lr=3e-4, total_steps=1000)
    b = build(in_tokens, max_lr=3e-4, total_steps=1000, tokens_per_step=tokens_per_step)
    assert [a(s) for s in range(1001)] == pytest.approx([b(s) for s in range(1001)], rel=1e-12)


def test_infinite_inverse_sqrt_cooldown_keeps_its_curve_in_tokens():
    """Step 100 of 1000, warm-up 10, cool-down 590 (Ibrahim et al.'s timescale 10): 2.284e-4."""
    tokens_per_step = 1104 * 2048
    spec = ScheduleSpec(
        "infinite",
        warmup=10 * tokens_per_step,
        cooldown=590 * tokens_per_step,
        anneal=0,
        cooldown_shape="inverse_sqrt",
        timescale=10.0,
        unit="tokens",
    )
    f = build(spec, max_lr=3e-4, total_steps=1000, tokens_per_step=tokens_per_step)
    assert f(100) == pytest.approx(2.284e-4, abs=1e-7)


def _papers(step: int, name: str, shape: str, max_lr: float, total: int) -> float:
    """The formulas of shared/PAPERS.md, written out here independently of cpt.schedules."""
    warmup, cooldown, anneal, c, min_lr, a = 10, 590, 150, 0.55 * max_lr, 0.1 * max_lr, 10.0
    if step < warmup:
        return max_lr * step / warmup
    if name == "cosine":  # Gupta et al.: decays *to* min over the run after the warm-up
        t, span = step - warmup, total - warmup
        return min_lr + (max_lr - min_lr) / 2 * (1 + math.cos(math.pi * t / span))
    t = step - warmup  # Ibrahim et al.'s infinite schedule
    if t < cooldown:
        if shape == "cosine":
            return c + (max_lr - c) / 2 * (1 + math.cos(math.pi * t / cooldown))

        def g(x: float) -> float:
            return 1 / math.sqrt(1 + a * x) - 1

        return max_lr + (c - max_lr) * g(t / cooldown) / g(1)
    if step < total - anneal:
        return c
    k = math.log(c / min_lr) / anneal
    return c * math.exp(-k * (step - (total - anneal)))


@pytest.mark.parametrize("unit", ["steps", "tokens"])
@pytest.mark.parametrize(
    ("name", "shape"), [("cosine", "cosine"), ("infinite", "cosine"), ("infinite", "inverse_sqrt")]
)
def test_schedules_equal_the_papers_formulas_in_both_units(name, shape, unit):
    tokens_per_step = 1104 * 2048
    scale = tokens_per_step if unit == "tokens" else 1
    spec = ScheduleSpec(
        name,
        warmup=10 * scale,
        cooldown=590 * scale,
        anneal=150 * scale,
        cooldown_shape=shape,
        timescale=10.0,
        constant_lr_ratio=0.55,
        min_lr_ratio=0.1,
        unit=unit,
    )
    f = build(spec, max_lr=3e-4, total_steps=1000, tokens_per_step=tokens_per_step)
    expected = [_papers(s, name, shape, 3e-4, 1000) for s in range(1001)]
    assert [f(s) for s in range(1001)] == pytest.approx(expected, rel=1e-9, abs=1e-15)
