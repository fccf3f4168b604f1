"""Learning-rate schedules as pure functions of the optimizer step.

Each returns the learning rate itself (not a factor), so a test can compare it with the papers'
formulas directly; `cpt.module` divides by `max_lr` to drive `torch.optim.lr_scheduler.LambdaLR`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

Schedule = Callable[[int], float]


def resolve_warmup(warmup: int | float, total_steps: int) -> int:
    """Warm-up in steps: an int is a step count, a float in [0, 1) a fraction of `total_steps`."""
    if isinstance(warmup, bool) or warmup < 0:
        raise ValueError(f"warmup must be a step count >= 0 or a fraction in [0, 1), got {warmup}")
    if isinstance(warmup, float):
        if warmup >= 1.0:
            raise ValueError(
                f"warmup fraction must be in [0, 1), got {warmup}; give steps as an int"
            )
        return round(warmup * total_steps)
    if warmup > total_steps:
        raise ValueError(f"warmup of {warmup} steps is longer than the run ({total_steps} steps)")
    return int(warmup)


def warmup_cosine(
    step: int, *, max_lr: float, total_steps: int, warmup_steps: int, min_lr_ratio: float
) -> float:
    """Linear warm-up from 0 to `max_lr`, then cosine decay *to* `min_lr_ratio * max_lr`.

    lr(t) = max_lr * t / T_w                                   for t < T_w
    lr(t) = min + (max_lr - min) / 2 * (1 + cos(pi * (t - T_w) / (T - T_w)))   up to T, min after
    """
    min_lr = min_lr_ratio * max_lr
    if step < warmup_steps:
        return max_lr * step / warmup_steps
    decay_steps = total_steps - warmup_steps
    if decay_steps <= 0 or step >= total_steps:
        return min_lr if decay_steps > 0 else max_lr
    progress = (step - warmup_steps) / decay_steps
    return min_lr + (max_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def constant(step: int, *, max_lr: float, warmup_steps: int = 0) -> float:
    """`max_lr` throughout (after an optional linear warm-up): the no-re-warming baseline."""
    if step < warmup_steps:
        return max_lr * step / warmup_steps
    return max_lr


def build(
    name: str, *, max_lr: float, total_steps: int, warmup: int | float, min_lr_ratio: float
) -> Schedule:
    """The schedule `name` with its arguments bound: a function step -> lr."""
    warmup_steps = resolve_warmup(warmup, total_steps)
    if name == "cosine":
        return lambda step: warmup_cosine(
            step,
            max_lr=max_lr,
            total_steps=total_steps,
            warmup_steps=warmup_steps,
            min_lr_ratio=min_lr_ratio,
        )
    if name == "constant":
        return lambda step: constant(step, max_lr=max_lr, warmup_steps=warmup_steps)
    raise ValueError(f"unknown schedule {name!r}; expected one of {SCHEDULES}")


SCHEDULES = ("cosine", "constant")
