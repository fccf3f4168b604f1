"""Validation curves from a run folder's `metrics.csv`, and a plot of a pre-train -> CPT sequence."""

from __future__ import annotations

import csv
from pathlib import Path

VAL_PREFIX = "val/"


def read_val_curves(run_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """{domain: [(step, loss), ...]} from the CSV metrics a run wrote."""
    curves: dict[str, list[tuple[int, float]]] = {}
    with (Path(run_dir) / "metrics.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            for key, value in row.items():
                if key.startswith(VAL_PREFIX) and key.endswith("/loss") and value:
                    domain = key[len(VAL_PREFIX) : -len("/loss")]
                    curves.setdefault(domain, []).append((int(row["step"]), float(value)))
    return curves


def plot_sequence(run_dirs: list[str | Path], labels: list[str], path: str | Path) -> Path:
    """Validation loss of every domain through consecutive runs (e.g. pre-training, then CPT)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    offset, colors, starts = 0, {}, []
    for run_dir, label in zip(run_dirs, labels):
        starts.append((offset, label))
        curves = read_val_curves(run_dir)
        last = offset
        for domain, points in sorted(curves.items()):
            steps = [offset + s for s, _ in points]
            line = ax.plot(
                steps,
                [v for _, v in points],
                marker=".",
                color=colors.get(domain),
                label=domain if domain not in colors else None,
            )[0]
            colors.setdefault(domain, line.get_color())
            last = max(last, *steps)
        offset = last
    for start, label in starts:
        ax.axvline(start, color="grey", linestyle=":", linewidth=1)
        ax.text(start, ax.get_ylim()[1], f" {label}", va="top", fontsize=8, color="grey")
    ax.set_xlabel("optimizer step (runs placed end to end)")
    ax.set_ylabel("validation loss")
    ax.legend(title="domain")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
