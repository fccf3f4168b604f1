"""`StabilityGap`: dense monitoring of the loss drop-and-recovery at the start of CPT (Guo et al.).

Independently of the regular validation, the callback evaluates fixed held-out batches of every
domain (`batches` x micro-batch windows spread evenly over its whole validation set, not its first
documents alone; the same for every seed) before the first step and then on a
dense-then-sparse schedule: by default every step for the first 20, every 5 up to 200, then every
50. At the end it reports per domain:

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

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from cpt.callbacks.base import expect, is_count
from cpt.callbacks.monitor import CurveMonitor


def spread(count: int, total: int) -> list[int]:
    """`count` distinct indices spread evenly over `range(total)`, first and last included (all of
    them when there are no more than `count`)."""
    if total <= count:
        return list(range(total))
    return np.linspace(0, total - 1, count).round().astype(int).tolist()


class StabilityGap(CurveMonitor):
    prefix, gap_prefix = "stability_gap", "stability_gap"

    def __init__(
        self,
        dense: list[list[int]] | None = None,
        every: int = 50,
        batches: int = 4,
        plot: bool = True,
        output_dir: str | None = None,
    ) -> None:
        super().__init__(dense, every, "callbacks.stability_gap")
        expect(is_count(batches), "callbacks.stability_gap.batches", "a count >= 1", batches)
        self.batches, self.plot, self.output_dir = batches, plot, output_dir
        self._fixed: list[tuple[str, list[Any]]] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = trainer.datamodule
        loaders = datamodule.val_dataloader()
        self._fixed = []
        for name, loader in zip(datamodule.domain_names, loaders):
            picked = spread(self.batches * loader.batch_size, len(loader.dataset))
            fixed = DataLoader(Subset(loader.dataset, picked), batch_size=loader.batch_size)
            self._fixed.append((name, list(fixed)))
        super().on_train_start(trainer, pl_module)

    def point_name(self, name: str) -> str:
        return f"{name}/loss"

    @torch.no_grad()
    def measure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, list[Any]]:
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

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """After every callback's `on_train_end`: the task curves are measured by then."""
        if self.plot and trainer.is_global_zero and self.curves:
            folder = Path(self.output_dir or trainer.default_root_dir)
            tasks: dict[str, Any] = {}
            for callback in trainer.callbacks:
                if isinstance(callback, CurveMonitor):
                    tasks.update(callback.gap_curves())
            self.figure = plot_gap(self.curves, self.metrics, folder / "stability_gap.png", tasks)

    def summary(self) -> dict[str, Any]:
        return {"stability_gap": self.metrics}


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
