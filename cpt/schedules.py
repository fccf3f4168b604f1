"""Learning-rate schedules as pure functions of the optimizer step.

Each returns the learning rate itself (not a factor), so tests compare it with the papers'
formulas directly. All start with an optional linear warm-up from 0 (`lr = max_lr * t / T_w`) and
are continuous at every phase boundary. `t` is the optimizer step, `T` the run's total steps.

- `constant`:      max_lr after warm-up (the no-re-warming baseline).
- `cosine`:        min + (max_lr - min) / 2 * (1 + cos(pi * (t - T_w) / (T - T_w))), to min at T.
- `linear`:        max_lr - (max_lr - min) * (t - T_w) / (T - T_w), to min at T.
- `inverse_sqrt`:  max_lr / sqrt(1 + (t - T_w) / timescale).
- `infinite` (Ibrahim et al. 2024): warm-up; cool-down over T_cd steps from max_lr to the constant
  c, cosine  c + (max_lr - c) / 2 * (1 + cos(pi * t' / T_cd))  or inverse-sqrt
  max_lr + (c - max_lr) * g(t' / T_cd) / g(1) with g(x) = 1 / sqrt(1 + a * x) - 1 (a = timescale),
  t' = t - T_w; constant c; then an anneal over the last T_an steps, c * exp(-k * n) with
  k = ln(c / min) / T_an, n = t - (T - T_an), which ends at min.
- `wsd` (warm-up, stable, decay): max_lr until the last T_d steps, then to min by `decay_shape`:
  linear, cosine, or 1-sqrt: min + (max_lr - min) * (1 - sqrt(n / T_d)).
Here min = min_lr_ratio * max_lr and c = constant_lr_ratio * max_lr.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

Schedule = Callable[[int], float]
SCHEDULES = ("constant", "cosine", "linear", "inverse_sqrt", "infinite", "wsd")
SHAPES = ("cosine", "linear", "1-sqrt", "inverse_sqrt")


def resolve_steps(value: int | float, total_steps: int, key: str = "warmup") -> int:
    """A phase length in steps: an int is a step count, a float in [0, 1) a fraction of the run."""
    if isinstance(value, bool) or value < 0:
        raise ValueError(f"{key}: expected a step count >= 0 or a fraction in [0, 1), got {value}")
    if isinstance(value, float):
        if value >= 1.0:
            raise ValueError(
                f"{key}: a fraction must be in [0, 1), got {value}; give steps as an int"
            )
        return round(value * total_steps)
    if value > total_steps:
        raise ValueError(f"{key}: {value} steps are longer than the run ({total_steps} steps)")
    return int(value)


def resolve_warmup(warmup: int | float, total_steps: int) -> int:
    return resolve_steps(warmup, total_steps, "warmup")


def warmup(step: int, max_lr: float, warmup_steps: int) -> float:
    """The linear warm-up every schedule starts with: from 0 at step 0 towards `max_lr`."""
    return max_lr * step / warmup_steps


def _decay(shape: str, progress: float, start: float, end: float, timescale: float = 10.0) -> float:
    """From `start` (progress 0) to `end` (progress 1) along `shape`."""
    progress = min(max(progress, 0.0), 1.0)
    if shape == "cosine":
        return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if shape == "linear":
        return start + (end - start) * progress
    if shape == "1-sqrt":
        return end + (start - end) * (1.0 - math.sqrt(progress))
    if shape == "inverse_sqrt":

        def g(x: float) -> float:
            return 1.0 / math.sqrt(1.0 + timescale * x) - 1.0

        return start + (end - start) * g(progress) / g(1.0)
    raise ValueError(f"unknown decay shape {shape!r}; expected one of {SHAPES}")


def warmup_cosine(
    step: int, *, max_lr: float, total_steps: int, warmup_steps: int, min_lr_ratio: float
) -> float:
    """Linear warm-up, then cosine decay *to* `min_lr_ratio * max_lr` at `total_steps` (Gupta et al.)."""
    return warmup_decay(step, max_lr, total_steps, warmup_steps, min_lr_ratio, "cosine")


def warmup_decay(
    step: int, max_lr: float, total_steps: int, warmup_steps: int, min_lr_ratio: float, shape: str
) -> float:
    if step < warmup_steps:
        return warmup(step, max_lr, warmup_steps)
    decay_steps = total_steps - warmup_steps
    if decay_steps <= 0:
        return max_lr
    return _decay(shape, (step - warmup_steps) / decay_steps, max_lr, min_lr_ratio * max_lr)


def constant(step: int, *, max_lr: float, warmup_steps: int = 0) -> float:
    if step < warmup_steps:
        return warmup(step, max_lr, warmup_steps)
    return max_lr


def inverse_sqrt(step: int, *, max_lr: float, warmup_steps: int, timescale: float) -> float:
    if step < warmup_steps:
        return warmup(step, max_lr, warmup_steps)
    return max_lr / math.sqrt(1.0 + (step - warmup_steps) / timescale)


def infinite(
    step: int,
    *,
    max_lr: float,
    total_steps: int,
    warmup_steps: int,
    cooldown_steps: int,
    anneal_steps: int,
    constant_lr: float,
    min_lr: float,
    cooldown_shape: str = "cosine",
    timescale: float = 10.0,
) -> float:
    """Ibrahim et al.'s infinite schedule: warm-up, cool-down, constant, exponential anneal."""
    if step < warmup_steps:
        return warmup(step, max_lr, warmup_steps)
    t = step - warmup_steps
    if t < cooldown_steps:
        return _decay(cooldown_shape, t / cooldown_steps, max_lr, constant_lr, timescale)
    anneal_start = total_steps - anneal_steps
    if anneal_steps <= 0 or step < anneal_start:
        return constant_lr
    n = min(step - anneal_start, anneal_steps)
    k = math.log(constant_lr / min_lr) / anneal_steps
    return constant_lr * math.exp(-k * n)


def wsd(
    step: int,
    *,
    max_lr: float,
    total_steps: int,
    warmup_steps: int,
    decay_steps: int,
    min_lr_ratio: float,
    decay_shape: str = "1-sqrt",
) -> float:
    if step < warmup_steps:
        return warmup(step, max_lr, warmup_steps)
    decay_start = total_steps - decay_steps
    if decay_steps <= 0 or step < decay_start:
        return max_lr
    return _decay(decay_shape, (step - decay_start) / decay_steps, max_lr, min_lr_ratio * max_lr)


@dataclass
class ScheduleSpec:
    """The `schedule` config group: everything a schedule needs besides the step and the run.

    Phase lengths are an int (steps, or tokens with `unit: tokens`) or a float in [0, 1) (a
    fraction of the run). Checked here on its own; `build` checks it against the run's length.
    """

    name: str = "cosine"  # constant | cosine | linear | inverse_sqrt | infinite | wsd
    warmup: int | float = 0.01
    min_lr_ratio: float = 0.1
    timescale: float = 10.0  # inverse_sqrt: steps (tokens with unit=tokens); infinite: `a`, no unit
    constant_lr_ratio: float = 0.55  # infinite: c / max_lr (1.65e-4 / 3e-4 in Ibrahim et al.)
    cooldown: int | float = 0.59  # infinite: length of the cool-down phase
    cooldown_shape: str = "cosine"  # infinite: cosine | inverse_sqrt
    anneal: int | float = 0.15  # infinite: length of the final anneal (0: none)
    decay: int | float = 0.2  # wsd: length of the final decay
    decay_shape: str = "1-sqrt"  # wsd: linear | cosine | 1-sqrt
    unit: str = (
        "steps"  # steps | tokens: what integer phase lengths (and inverse_sqrt's timescale) count
    )

    def __post_init__(self) -> None:
        if self.name not in SCHEDULES:
            raise ValueError(
                f"name: unknown schedule {self.name!r}; expected one of {list(SCHEDULES)}"
            )
        if self.unit not in ("steps", "tokens"):
            raise ValueError(f"unit: expected steps or tokens, got {self.unit!r}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio: expected a value in [0, 1], got {self.min_lr_ratio}")
        if not 0.0 < self.constant_lr_ratio <= 1.0:
            raise ValueError(
                f"constant_lr_ratio: expected a value in (0, 1], got {self.constant_lr_ratio}"
            )
        if not self.timescale > 0:
            raise ValueError(f"timescale: expected a positive value, got {self.timescale}")
        if self.cooldown_shape not in ("cosine", "inverse_sqrt"):
            raise ValueError(
                f"cooldown_shape: expected cosine or inverse_sqrt, got {self.cooldown_shape!r}"
            )
        if self.decay_shape not in ("linear", "cosine", "1-sqrt"):
            raise ValueError(
                f"decay_shape: expected linear, cosine or 1-sqrt, got {self.decay_shape!r}"
            )
        if self.name == "infinite" and not 0 < self.min_lr_ratio <= self.constant_lr_ratio <= 1:
            raise ValueError(
                "constant_lr_ratio: the infinite schedule needs "
                f"0 < min_lr_ratio ({self.min_lr_ratio}) <= constant_lr_ratio "
                f"({self.constant_lr_ratio}) <= 1"
            )
        for key in ("warmup", "cooldown", "anneal", "decay"):
            resolve_steps(getattr(self, key), 1 << 62, key)  # sign and fraction range only


def in_steps(spec: ScheduleSpec, total_steps: int, tokens_per_step: int | None = None) -> dict:
    """The spec in steps: `{warmup, cooldown, anneal, decay}` lengths (0 where the schedule has no
    such phase) checked against the run, and the timescale (a step count for inverse_sqrt).
    Raises ValueError('key: message')."""
    if spec.unit == "tokens":
        if not tokens_per_step:
            raise ValueError("unit: tokens needs the number of tokens per optimizer step")
        spec = _in_steps(spec, tokens_per_step)
    used = {"infinite": ("cooldown", "anneal"), "wsd": ("decay",)}.get(spec.name, ())
    lengths = {
        key: resolve_steps(getattr(spec, key), total_steps, key) if key in used else 0
        for key in ("cooldown", "anneal", "decay")
    }
    lengths = {"warmup": resolve_steps(spec.warmup, total_steps, "warmup"), **lengths}
    w, cd, an, d = lengths.values()
    if spec.name == "infinite" and w + cd + an > total_steps:
        raise ValueError(
            f"cooldown: warmup + cooldown + anneal = {w + cd + an} steps exceed the run ({total_steps})"
        )
    if spec.name == "wsd" and w + d > total_steps:
        raise ValueError(f"decay: warmup + decay = {w + d} steps exceed the run ({total_steps})")
    return {**lengths, "timescale": spec.timescale}


def phases(
    spec: ScheduleSpec, total_steps: int, tokens_per_step: int | None = None
) -> list[tuple[str, int, int]]:
    """The schedule's phases as `(name, first step, end step)` (end exclusive), in order; a phase
    of zero steps is kept, so that a plan can say it rounded away."""
    n = in_steps(spec, total_steps, tokens_per_step)
    w, t = n["warmup"], total_steps
    if spec.name == "infinite":
        cd_end, an_start = w + n["cooldown"], t - n["anneal"]
        return [
            ("warmup", 0, w),
            ("cooldown", w, cd_end),
            ("constant", cd_end, an_start),
            ("anneal", an_start, t),
        ]
    if spec.name == "wsd":
        return [("warmup", 0, w), ("stable", w, t - n["decay"]), ("decay", t - n["decay"], t)]
    after = {"constant": "constant", "inverse_sqrt": "inverse_sqrt"}.get(spec.name, "decay")
    return [("warmup", 0, w), (after, w, t)]


def build(
    spec: ScheduleSpec, *, max_lr: float, total_steps: int, tokens_per_step: int | None = None
) -> Schedule:
    """The schedule `spec.name` with its arguments bound: a function step -> lr.

    With `unit: tokens`, integer phase lengths (and inverse_sqrt's `timescale`) are token counts
    (CPT budgets are stated in tokens), turned into steps with `tokens_per_step`; fractions stay
    fractions. The infinite schedule's timescale `a` scales a progress in [0, 1]: it has no unit.
    """
    n = in_steps(spec, total_steps, tokens_per_step)
    w, timescale = n["warmup"], n["timescale"]
    min_lr = spec.min_lr_ratio * max_lr
    if spec.name == "constant":
        return lambda s: constant(s, max_lr=max_lr, warmup_steps=w)
    if spec.name in ("cosine", "linear"):
        return lambda s: warmup_decay(s, max_lr, total_steps, w, spec.min_lr_ratio, spec.name)
    if spec.name == "inverse_sqrt":
        return lambda s: inverse_sqrt(s, max_lr=max_lr, warmup_steps=w, timescale=timescale)
    if spec.name == "infinite":
        return lambda s: infinite(
            s,
            max_lr=max_lr,
            total_steps=total_steps,
            warmup_steps=w,
            cooldown_steps=n["cooldown"],
            anneal_steps=n["anneal"],
            constant_lr=spec.constant_lr_ratio * max_lr,
            min_lr=min_lr,
            cooldown_shape=spec.cooldown_shape,
            timescale=timescale,
        )
    if spec.name == "wsd":
        return lambda s: wsd(
            s,
            max_lr=max_lr,
            total_steps=total_steps,
            warmup_steps=w,
            decay_steps=n["decay"],
            min_lr_ratio=spec.min_lr_ratio,
            decay_shape=spec.decay_shape,
        )
    raise ValueError(f"name: unknown schedule {spec.name!r}; expected one of {SCHEDULES}")


def _in_steps(spec: ScheduleSpec, tokens_per_step: int) -> ScheduleSpec:

    def steps(value: int | float) -> int | float:
        if isinstance(value, (float, bool)):
            return value
        return round(value / tokens_per_step)

    return replace(
        spec,
        unit="steps",
        warmup=steps(spec.warmup),
        cooldown=steps(spec.cooldown),
        anneal=steps(spec.anneal),
        decay=steps(spec.decay),
        # only inverse_sqrt's timescale counts steps; the infinite schedule's `a` has no unit
        timescale=spec.timescale / tokens_per_step
        if spec.name == "inverse_sqrt"
        else spec.timescale,
    )
