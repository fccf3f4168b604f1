"""The papers' figures from a collected sweep (`runs.csv`, `curves.csv`); used by the notebooks.

- `plot_rewarming`: upstream and downstream validation loss against tokens, one line per run
  (warm-up length x max LR), as in Gupta et al. 2023;
- `plot_replay_frontier`: final upstream against final downstream loss per replay fraction, the
  forgetting/adaptation frontier of Ibrahim et al. 2024;
- `plot_stability_gap` and `gap_table`: the first steps of CPT zoomed in, and the gap metrics
  (Guo et al. 2024);
- `plot_task_sequence`: the held-out loss through two tasks in a row, one line per chain of
  schedules (infinite vs cosine over a task sequence, Ibrahim et al. 2024).
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from cpt.analysis.seeds import SEED, by_seed, curves_by_seed, group_keys, t95  # noqa: E402


def load(folder: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The run table and the long curve table that `cpt.analysis.collect` wrote into `folder`;
    the keys the sweep varies (its `sweep.json`) ride along as `runs.attrs["swept"]`."""
    folder = Path(folder)
    runs = pd.read_csv(folder / "runs.csv")
    meta = folder / "sweep.json"
    if meta.is_file():
        runs.attrs["swept"] = json.loads(meta.read_text()).get("swept")
    return runs, pd.read_csv(folder / "curves.csv")


def label(row: pd.Series, by: list[str]) -> str:
    parts = [f"{key.split('.')[-1]}={row[key]}" for key in by if key in row and pd.notna(row[key])]
    return ", ".join(parts) or str(row["run"])


def swept(runs: pd.DataFrame) -> list[str]:
    """The keys the sweep varies: its own overrides (`sweep.json`) when known, so every line of a
    figure is labelled by all of them; else the override columns that vary across runs."""
    declared = runs.attrs.get("swept")
    if declared is not None:
        return [key for key in declared if key in runs.columns]
    fixed = {"run", "status", "error", "skipped_steps"}
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
    """One panel per domain, one line per finished run: `metric` against `x` (step or tokens);
    when the sweep varies the seed, one line per grid point (the mean over seeds) with its 95 %
    interval as a band."""
    fig, axes = plt.subplots(1, len(domains), figsize=(6 * len(domains), 4), squeeze=False)
    if SEED in by:
        _seed_bands(axes[0], runs, curves, metric, x, by, domains, max_step)
    for ax, domain in zip(axes[0], domains):
        for _, row in runs[runs["status"] == "finished"].iterrows() if SEED not in by else []:
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


def _seed_bands(axes, runs, curves, metric, x, by, domains, max_step) -> None:
    keys = group_keys(runs, by)
    table = curves_by_seed(runs, curves, by)
    table = table[table["metric"] == metric]
    if max_step is not None:
        table = table[table["step"] <= max_step]
    for ax, domain in zip(axes, domains):
        part = table[table["domain"] == domain]
        groups = part.groupby(keys, dropna=False) if keys else [((), part)]
        for key, group in groups:
            values = key if isinstance(key, tuple) else (key,)
            name = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in zip(keys, values))
            xs = group["tokens" if x == "tokens" else "step"]
            line = ax.plot(
                xs, group["mean"], marker=".", label=f"{name} (n={group['n'].max()} seeds)"
            )[0]
            low, high = group["mean"] - group["ci95"], group["mean"] + group["ci95"]
            ax.fill_between(xs, low, high, color=line.get_color(), alpha=0.2, linewidth=0)


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
    keys = swept(runs)
    others = [c for c in keys if c not in (fraction, SEED)]
    up, down = f"final/val/{upstream}/loss", f"final/val/{downstream}/loss"
    seeds = SEED in keys  # then one point per grid point: the mean over seeds, 95 % error bars
    table = by_seed(runs, keys) if seeds else runs[runs["status"] == "finished"]
    x, y = (f"{up}/mean", f"{down}/mean") if seeds else (up, down)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    groups = table.groupby(others, dropna=False) if others else [((), table)]
    for key, group in groups:
        group = group.sort_values(fraction)
        name = ", ".join(
            f"{k.split('.')[-1]}={v}"
            for k, v in zip(others, key if isinstance(key, tuple) else (key,))
        )
        ax.errorbar(
            group[x],
            group[y],
            xerr=group[f"{up}/ci95"] if seeds else None,
            yerr=group[f"{down}/ci95"] if seeds else None,
            marker="o",
            capsize=3,
            label=(
                f"{name or 'replay fractions'}: mean of n={group['n'].max()} seeds, 95 % bars"
                if seeds
                else name or None
            ),
        )
        for _, row in group.iterrows():
            ax.annotate(f"{row[fraction] * 100:g} %", (row[x], row[y]), fontsize=8)
    ax.set_xlabel(f"final {upstream} loss (forgetting ->)")
    ax.set_ylabel(f"final {downstream} loss (<- adaptation)")
    ax.set_title("replay fraction: forgetting/adaptation frontier", fontsize=10)
    if others or seeds:
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


def plot_task_sequence(
    runs: pd.DataFrame,
    curves: pd.DataFrame,
    chains: dict[str, tuple[str, str]],
    steps: int,
    metric: str = "gap_loss",
    domains=("upstream", "downstream"),
):
    """Per domain, `metric` through task 1 then task 2 (its steps after task 1's `steps`), one line
    per chain `{label: (task 1 variant, task 2 variant)}` (`runs["variant"]`), the mean over seeds
    with its 95 % band."""
    import math

    finished = runs[runs["status"] == "finished"]
    fig, axes = plt.subplots(1, len(domains), figsize=(6 * len(domains), 4), squeeze=False)
    for ax, domain in zip(axes[0], domains):
        mine = curves[(curves["domain"] == domain) & (curves["metric"] == metric)]
        for name, chain in chains.items():
            parts = []
            for offset, variant in zip((0, steps), chain):
                ids = finished.loc[finished["variant"] == variant, "run"]
                part = mine[mine["run"].isin(ids)].groupby("step")["value"]
                part = part.agg(["mean", "std", "count"]).reset_index()
                part["step"] += offset
                parts.append(part)
            table = pd.concat(parts)
            if table.empty:
                continue
            n = int(table["count"].max())
            ci = [
                t95(int(k)) * s / math.sqrt(k) if k > 1 else math.nan
                for k, s in zip(table["count"], table["std"])
            ]
            line = ax.plot(table["step"], table["mean"], label=f"{name} (n={n} seeds)")[0]
            low = table["mean"] - pd.Series(ci, index=table.index)
            high = table["mean"] + pd.Series(ci, index=table.index)
            ax.fill_between(
                table["step"], low, high, color=line.get_color(), alpha=0.2, linewidth=0
            )
        ax.axvline(steps, color="gray", linestyle=":", linewidth=1)
        ax.set_title(f"{domain}: task 1, then task 2 (from step {steps})", fontsize=10)
        ax.set_xlabel("optimizer step over both tasks")
        ax.set_ylabel("held-out loss")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def gap_table(runs: pd.DataFrame, domain: str = "upstream") -> pd.DataFrame:
    keys = ["initial", "peak", "peak_step", "recovery_step", "area", "final"]
    columns = [f"gap/{domain}/{k}" for k in keys if f"gap/{domain}/{k}" in runs]
    table = runs.loc[runs["status"] == "finished", ["run", *swept(runs), *columns]]
    return table.rename(columns={f"gap/{domain}/{k}": k for k in keys})
