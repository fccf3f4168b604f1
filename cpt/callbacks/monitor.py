"""The dense-then-sparse curve machinery the stability-gap and task monitors share.

A `CurveMonitor` measures some values (`measure`: name -> (value, standard error)) before the first
step and then at `eval_steps` (by default every step to 20, every 5 to 200, then every 50), keeps
each curve of (step, value, stderr) in its checkpoint state (a resumed run goes on), logs every
point under `<prefix>/<name>`, and at the end reduces each curve to its stability gap
(`gap_metrics`), logged under `<gap_prefix>/<name>/<key>`.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L

from cpt.callbacks.base import CPTCallback, check_dense, expect, is_count

DENSE = [[20, 1], [200, 5]]  # every step to 20, every 5 to 200


def eval_steps(dense: list[list[int]], every: int, max_steps: int) -> set[int]:
    """Steps to evaluate: `dense` = [[until, every], ...] in order, then every `every` steps."""
    steps, start = {0, max_steps}, 0
    for until, stride in dense:
        steps.update(range(start, min(until, max_steps) + 1, stride))
        start = until
    steps.update(range(start, max_steps + 1, every))
    return {s for s in steps if s <= max_steps}


def gap_metrics(
    steps: list[int],
    values: list[float],
    higher_is_better: bool = False,
    stderrs: list[float] | None = None,
) -> dict[str, Any]:
    """The stability gap of one curve (`steps[0]` is the start): its *first* excursion.

    The excursion begins at the first point worse than the start (a higher loss, or a lower
    accuracy with `higher_is_better`) and ends at the first later point back at or better than
    the start (`recovery_step`, None if it never is). `peak`/`peak_step`: its worst point;
    `gap_area`: the area between the curve and the start over it (value x steps, trapezoids). A
    later rise is not the gap: the run's worst point is `worst`/`worst_step`, and `forgetting` is
    final minus initial. With `stderrs` (a standard error per point), `within_noise` says whether
    the gap's height is within two standard errors of the difference from the start.
    """
    sign = -1.0 if higher_is_better else 1.0
    initial = values[0]
    worse = [sign * (v - initial) for v in values]  # > 0: worse than the start
    worst_index = max(range(len(values)), key=lambda i: worse[i])
    result: dict[str, Any] = {
        "initial": initial,
        "peak": initial,
        "peak_step": 0,
        "recovery_step": 0,
        "gap_area": 0.0,
        "final": values[-1],
        "forgetting": values[-1] - initial,
        "worst": values[worst_index],
        "worst_step": steps[worst_index],
    }
    start = next((i for i in range(1, len(values)) if worse[i] > 0), None)
    if start is not None:
        end = next((i for i in range(start + 1, len(values)) if worse[i] <= 0), None)
        inside = range(start, end if end is not None else len(values))
        top = max(inside, key=lambda i: worse[i])
        last = end if end is not None else len(values) - 1
        area = sum(
            _area_above(steps[i - 1], worse[i - 1], steps[i], worse[i])
            for i in range(start, last + 1)
        )
        result.update(
            peak=values[top],
            peak_step=steps[top],
            recovery_step=steps[end] if end is not None else None,
            gap_area=area,
        )
    if stderrs is not None:
        height = abs(result["peak"] - initial)
        noise = (stderrs[0] ** 2 + stderrs[steps.index(result["peak_step"])] ** 2) ** 0.5
        result.update(stderr=stderrs[0], within_noise=bool(height <= 2 * noise))
    return result


def _area_above(s0: int, y0: float, s1: int, y1: float) -> float:
    """Area of the positive part of the segment (s0, y0)-(s1, y1)."""
    width = s1 - s0
    if y0 >= 0 and y1 >= 0:
        return width * (y0 + y1) / 2
    if y0 <= 0 and y1 <= 0:
        return 0.0
    crossing = width * abs(y0) / (abs(y0) + abs(y1))  # where the segment crosses zero
    return (crossing * y0 if y0 > 0 else (width - crossing) * y1) / 2


class CurveMonitor(CPTCallback):
    prefix = ""  # a point is logged as <prefix>/<name>
    gap_prefix = ""  # the gap metrics as <gap_prefix>/<name>/<key>

    def __init__(self, dense: list[list[int]] | None, every: int, key: str) -> None:
        check_dense(f"{key}.dense", dense if dense is not None else DENSE)
        expect(is_count(every), f"{key}.every", "a step count >= 1", every)
        self.dense = [list(p) for p in (dense if dense is not None else DENSE)]
        self.every = every
        self.curves: dict[str, list[tuple[int, float, float]]] = {}
        self.higher: dict[str, bool] = {}  # a curve where higher is better (a task's accuracy)
        self.metrics: dict[str, dict[str, Any]] = {}
        self._steps: set[int] = set()

    def measure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, list[Any]]:
        """name -> [value, standard error] or [value, standard error, higher is better]."""
        raise NotImplementedError

    def ready(self) -> bool:
        """Whether there is anything to measure in this run."""
        return True

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._steps = eval_steps(self.dense, self.every, trainer.max_steps)
        if trainer.global_step == 0 and not self.curves:
            self._evaluate(trainer, pl_module, 0)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.global_step in self._steps:
            self._evaluate(trainer, pl_module, trainer.global_step)

    def _evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int) -> None:
        if not self.ready() or self._last_step() == step:
            return
        points = self.measure(trainer, pl_module)
        for name, (value, stderr, *higher) in points.items():
            self.curves.setdefault(name, []).append((step, value, stderr))
            if higher:
                self.higher[name] = higher[0]
        measured = {f"{self.prefix}/{self.point_name(name)}": p[0] for name, p in points.items()}
        for logger in trainer.loggers:  # direct: Lightning forbids self.log in on_train_start
            logger.log_metrics(measured, step=step)

    def point_name(self, name: str) -> str:
        return name

    def _last_step(self) -> int | None:
        return next(iter(self.curves.values()))[-1][0] if self.curves else None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for name, curve in self.curves.items():
            steps, values, stderrs = zip(*curve)
            self.metrics[name] = gap_metrics(
                list(steps), list(values), self.higher.get(name, False), list(stderrs)
            )
        flat = {
            f"{self.gap_prefix}/{name}/{key}": (math.nan if value is None else float(value))
            for name, m in self.metrics.items()
            for key, value in m.items()
            if isinstance(value, (int, float)) or value is None
        }
        for logger in trainer.loggers:
            logger.log_metrics(flat, step=trainer.global_step)

    def gap_curves(self) -> dict[str, tuple[list[tuple[int, float, float]], dict[str, Any]]]:
        """Curves another monitor's figure may draw beside its own (none by default)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {
            "curves": {k: [list(p) for p in v] for k, v in self.curves.items()},
            "higher": dict(self.higher),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.curves = {
            k: [(int(p[0]), float(p[1]), float(p[2]) if len(p) > 2 else 0.0) for p in v]
            for k, v in state.get("curves", {}).items()
        }
        self.higher = {k: bool(v) for k, v in state.get("higher", {}).items()}
