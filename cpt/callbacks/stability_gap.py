"""`StabilityGap`: dense monitoring of the loss drop-and-recovery at the start of CPT (Guo et al.).

Independently of the regular validation, the callback evaluates fixed held-out batches of every
domain (the first `batches` batches of its validation set) before the first step and then on a
dense-then-sparse schedule: by default every step for the first 20, every 5 up to 200, then every
50. The point before the first step is read instead when an earlier run of the grid measured the
same starting weights (`share_start_measurements`, `cpt/start_measurements.py`). At the end it
reports per domain:

- `initial`: the loss before continual pre-training;
- the gap, Guo et al.'s drop-and-recovery: the *first* excursion above `initial` (`gap_metrics`):
  `peak`, `peak_step` (its highest point), `recovery_step` (the first step after it began at which
  the loss is back at or below `initial`; None if it never is), `gap_area` (the area between the
  curve and `initial` over it, loss x steps, trapezoids);
- `worst`, `worst_step`: the run's highest point, which a later rise can make other than the peak;
- `final`, and `forgetting` = final - initial;
- `stderr` (the standard error of the monitor's mean loss over its held-out windows at the start)
  and `within_noise` (the gap's height is within two standard errors).
They are logged to every logger, returned for `summary.json`, and drawn into `stability_gap.png`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
import torch

from cpt.start_measurements import measured_once


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


class StabilityGap(L.Callback):
    def __init__(
        self,
        dense: list[list[int]] | None = None,
        every: int = 50,
        batches: int = 4,
        plot: bool = True,
        output_dir: str | None = None,
    ) -> None:
        self.dense = [list(p) for p in (dense if dense is not None else [[20, 1], [200, 5]])]
        self.every, self.batches, self.plot, self.output_dir = every, batches, plot, output_dir
        self.curves: dict[str, list[tuple[int, float]]] = {}
        self.metrics: dict[str, dict[str, Any]] = {}
        self._steps: set[int] = set()
        self._fixed: list[tuple[str, list[Any]]] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._steps = eval_steps(self.dense, self.every, trainer.max_steps)
        datamodule = trainer.datamodule
        loaders = datamodule.val_dataloader()
        self._fixed = []
        for name, loader in zip(datamodule.domain_names, loaders):
            batches = []
            for i, batch in enumerate(loader):
                if i == self.batches:
                    break
                batches.append(batch)
            self._fixed.append((name, batches))
        if trainer.global_step == 0:
            self._evaluate_start(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        step = trainer.global_step
        if step in self._steps and (
            not self.curves or self.curves[self._fixed[0][0]][-1][0] != step
        ):
            self._evaluate(trainer, pl_module, step)

    def _evaluate_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Step 0: read when an earlier run measured the same weights (`cpt.start_measurements`)."""
        points = measured_once(
            pl_module,
            "stability_gap",
            lambda: {"batches": self.batches},
            lambda: self._measure(pl_module),
        )
        self._record(trainer, 0, points)

    def _evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int) -> None:
        self._record(trainer, step, self._measure(pl_module))

    def _record(self, trainer: L.Trainer, step: int, points: dict[str, list[float]]) -> None:
        """Each domain's (loss, standard error) at `step` into its curve and every logger."""
        for name, (loss, stderr) in points.items():
            self.curves.setdefault(name, []).append((step, loss, stderr))
        measured = {f"stability_gap/{name}/loss": loss for name, (loss, _) in points.items()}
        for logger in trainer.loggers:  # direct: Lightning forbids self.log in on_train_start
            logger.log_metrics(measured, step=step)

    @torch.no_grad()
    def _measure(self, pl_module: L.LightningModule) -> dict[str, list[float]]:
        was_training = pl_module.training
        pl_module.eval()
        points = {}
        for name, batches in self._fixed:
            windows = torch.cat(
                [
                    pl_module.sequence_losses(
                        pl_module.transfer_batch_to_device(b, pl_module.device, 0)
                    ).double()
                    for b in batches
                ]
            )
            loss = float(windows.mean())
            # the monitor's noise: the standard error of its mean over the held-out windows
            stderr = float(windows.std() / len(windows) ** 0.5) if len(windows) > 1 else 0.0
            points[name] = [loss, stderr]
        if was_training:
            pl_module.train()
        return points

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for name, curve in self.curves.items():
            steps, losses, stderrs = zip(*curve)
            self.metrics[name] = gap_metrics(list(steps), list(losses), stderrs=list(stderrs))
        for logger in trainer.loggers:
            flat = {
                f"stability_gap/{name}/{key}": (math.nan if value is None else float(value))
                for name, m in self.metrics.items()
                for key, value in m.items()
            }
            logger.log_metrics(flat, step=trainer.global_step)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """After every callback's `on_train_end`: the task curves are measured by then."""
        if self.plot and trainer.is_global_zero and self.curves:
            folder = Path(self.output_dir or trainer.default_root_dir)
            tasks: dict[str, Any] = {}
            for callback in trainer.callbacks:
                if hasattr(callback, "gap_curves"):
                    tasks.update(callback.gap_curves())
            self.figure = plot_gap(self.curves, self.metrics, folder / "stability_gap.png", tasks)

    def summary(self) -> dict[str, Any]:
        """The callback protocol: what this callback adds to `summary.json`."""
        return {"stability_gap": self.metrics}

    def state_dict(self) -> dict[str, Any]:
        return {"curves": {k: [list(p) for p in v] for k, v in self.curves.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.curves = {k: [_point(p) for p in v] for k, v in state.get("curves", {}).items()}


def _point(p: Any) -> tuple[int, float, float]:
    """(step, loss, stderr); checkpoints written before the standard error have pairs."""
    return (int(p[0]), float(p[1]), float(p[2]) if len(p) > 2 else 0.0)


def plot_gap(
    curves: dict[str, list[tuple[int, float, float]]],
    metrics: dict[str, dict[str, Any]],
    path: Path,
    tasks: dict[str, tuple[list[tuple[int, float, float]], dict[str, Any]]] | None = None,
) -> Path:
    """The loss curves of the first steps; with `tasks` (name -> (curve, gap metrics)) a second
    panel of task scores beside them, on the same step axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 2 if tasks else 1
    fig, axes = plt.subplots(1, panels, figsize=(7 * panels, 4), squeeze=False)
    _panel(axes[0][0], curves, metrics, "held-out loss", "domain")
    axes[0][0].set_title(
        "stability gap: dotted lines are the losses before continual pre-training;\n"
        "bands: 2 standard errors of the monitor's held-out windows",
        fontsize=9,
    )
    if tasks:
        _panel(
            axes[0][1],
            {name: curve for name, (curve, _) in tasks.items()},
            {name: m for name, (_, m) in tasks.items()},
            "task score (higher is better)",
            "task/metric",
        )
        axes[0][1].set_title(
            "on tasks the gap is a drop below the dotted start;\n"
            "bands: 2 standard errors of lm-eval's score",
            fontsize=9,
        )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _panel(ax: Any, curves: dict[str, Any], metrics: dict[str, Any], ylabel: str, title: str):
    for name, curve in curves.items():
        steps, values, stderrs = zip(*curve)
        line = ax.plot(steps, values, marker=".", label=name)[0]
        low = [v - 2 * e for v, e in zip(values, stderrs)]
        high = [v + 2 * e for v, e in zip(values, stderrs)]
        ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.15, linewidth=0)
        m = metrics[name]
        ax.axhline(m["initial"], color=line.get_color(), linestyle=":", linewidth=1)
        if m["peak_step"]:
            ax.annotate(
                f"peak {m['peak']:.2f}",
                (m["peak_step"], m["peak"]),
                fontsize=8,
                color=line.get_color(),
            )
    ax.set_xscale("symlog", linthresh=20)
    ax.set_xlim(left=0)
    ax.set_xlabel("optimizer step (linear to 20, then log)")
    ax.set_ylabel(ylabel)
    ax.legend(title=title, fontsize=8)
    ax.grid(alpha=0.3)
