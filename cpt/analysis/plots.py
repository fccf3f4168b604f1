"""The papers' figures from a collected sweep (`runs.csv`, `curves.csv`); used by the notebooks.

- `plot_rewarming`: upstream and downstream validation loss against tokens, one line per run
  (warm-up length x max LR), as in Gupta et al. 2023;
- `plot_replay_frontier`: final upstream against final downstream loss per replay fraction, the
  forgetting/adaptation frontier of Ibrahim et al. 2024;
- `plot_stability_gap` and `gap_table`: the first steps of CPT zoomed in, and the gap metrics
  (Guo et al. 2024).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def load(folder: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The run table and the long curve table that `cpt.analysis.collect` wrote into `folder`."""
    folder = Path(folder)
    return pd.read_csv(folder / "runs.csv"), pd.read_csv(folder / "curves.csv")


def label(row: pd.Series, by: list[str]) -> str:
    parts = [f"{key.split('.')[-1]}={row[key]}" for key in by if key in row and pd.notna(row[key])]
    return ", ".join(parts) or str(row["run"])


def swept(runs: pd.DataFrame) -> list[str]:
    """The override columns that vary across runs."""
    fixed = {"run", "status", "error"}
    return [
        c
        for c in runs.columns
        if c not in fixed
        and "/" not in c
        and c not in ("steps", "tokens", "wall_time_s", "parameters", "init")
        and runs[c].nunique(dropna=False) > 1
    ]


def plot_curves(
    runs: pd.DataFrame,
    curves: pd.DataFrame,
    metric: str,
    x: str,
    by: list[str],
    domains,
    title: str,
    xlabel: str,
    ylabel: str,
    max_step: int | None = None,
):
    """One panel per domain, one line per finished run: `metric` against `x` (step or tokens)."""
    fig, axes = plt.subplots(1, len(domains), figsize=(6 * len(domains), 4), squeeze=False)
    for ax, domain in zip(axes[0], domains):
        for _, row in runs[runs["status"] == "finished"].iterrows():
            mask = (curves["run"] == row["run"]) & (curves["domain"] == domain)
            c = curves[mask & (curves["metric"] == metric)]
            if max_step is not None:
                c = c[c["step"] <= max_step]
            ax.plot(c[x], c["value"], marker=".", label=label(row, by))
        ax.set_title(title.format(domain=domain))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_rewarming(
    runs: pd.DataFrame,
    curves: pd.DataFrame,
    by: list[str] | None = None,
    domains=("upstream", "downstream"),
):
    return plot_curves(
        runs,
        curves,
        "loss",
        "tokens",
        by or swept(runs),
        domains,
        "{domain} validation loss",
        "tokens seen in continual pre-training",
        "loss",
    )


def plot_replay_frontier(
    runs: pd.DataFrame,
    fraction: str = "callbacks.replay.fraction",
    upstream="upstream",
    downstream="downstream",
):
    finished = runs[runs["status"] == "finished"].copy()
    others = [c for c in swept(finished) if c != fraction]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    groups = finished.groupby(others, dropna=False) if others else [((), finished)]
    for key, group in groups:
        group = group.sort_values(fraction)
        name = ", ".join(
            f"{k.split('.')[-1]}={v}"
            for k, v in zip(others, key if isinstance(key, tuple) else (key,))
        )
        ax.plot(
            group[f"final/val/{upstream}/loss"],
            group[f"final/val/{downstream}/loss"],
            marker="o",
            label=name or None,
        )
        for _, row in group.iterrows():
            ax.annotate(
                f"{row[fraction] * 100:g} %",
                (row[f"final/val/{upstream}/loss"], row[f"final/val/{downstream}/loss"]),
                fontsize=8,
            )
    ax.set_xlabel(f"final {upstream} loss (forgetting ->)")
    ax.set_ylabel(f"final {downstream} loss (<- adaptation)")
    ax.set_title("replay fraction: forgetting/adaptation frontier", fontsize=10)
    if others:
        ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_stability_gap(
    runs: pd.DataFrame,
    curves: pd.DataFrame,
    by: list[str] | None = None,
    max_step: int | None = 200,
    domains=("upstream", "downstream"),
):
    return plot_curves(
        runs,
        curves,
        "gap_loss",
        "step",
        by or swept(runs),
        domains,
        "{domain}: the first steps of CPT",
        "optimizer step",
        "held-out loss",
        max_step,
    )


def gap_table(runs: pd.DataFrame, domain: str = "upstream") -> pd.DataFrame:
    keys = ["initial", "peak", "peak_step", "recovery_step", "gap_area", "final"]
    columns = [f"gap/{domain}/{k}" for k in keys if f"gap/{domain}/{k}" in runs]
    table = runs.loc[runs["status"] == "finished", ["run", *swept(runs), *columns]]
    return table.rename(columns={f"gap/{domain}/{k}": k for k in keys})
