"""Runs that differ only by seed: aggregated per grid point, drawn as bands and error bars."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from cpt.analysis import plots
from cpt.analysis.collect import collect
from cpt.analysis.seeds import curves_by_seed
from tests.helpers import seed_runs

SWEPT = ["callbacks.replay.fraction", "seed"]

REPO = Path(__file__).resolve().parents[2]


def _curves(runs: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for _, run in runs[runs["status"] == "finished"].iterrows():
        for step in (0, 10, 20):
            for domain in ("upstream", "downstream"):
                value = run["final/val/upstream/loss"] + step / 100
                rows.append(
                    dict(
                        run=run["run"],
                        step=step,
                        tokens=step * 100.0,
                        domain=domain,
                        metric="loss",
                        value=value,
                    )
                )
    return pd.DataFrame(rows)


def test_figures_draw_the_mean_over_seeds_with_bands_and_error_bars():
    runs = seed_runs({0.0: [4.0, 4.2, 4.4], 0.25: [3.9, 4.0, 4.1]})
    runs.attrs["swept"] = SWEPT
    curves = _curves(runs)
    table = curves_by_seed(runs, curves, SWEPT)
    assert set(table["n"]) == {3}
    figure = plots.plot_rewarming(runs, curves)
    ax = figure.axes[0]
    assert len(ax.lines) == 2 and len(ax.collections) == 2  # a mean line and a band per point
    assert all("n=3 seeds" in line.get_label() for line in ax.lines)
    mean = ax.lines[0].get_ydata().tolist()
    assert mean == pytest.approx([4.2, 4.3, 4.4])
    frontier = plots.plot_replay_frontier(runs).axes[0]
    assert len(frontier.containers) == 1  # one errorbar series (no other swept key)
    assert frontier.get_legend_handles_labels()[1] == [
        "replay fractions: mean of n=3 seeds, 95 % bars"
    ]


def test_a_task_sequence_draws_each_chain_through_both_tasks_with_a_band():
    runs, curves = [], []
    for variant, level in (("t1_a", 4.0), ("t2_a", 3.0), ("t1_b", 4.5), ("t2_b", 3.5)):
        for seed in (1, 2, 3):
            run = f"{variant}/seed={seed}"
            runs.append({"run": run, "status": "finished", "variant": variant, "seed": seed})
            for step in (0, 10, 20):
                for domain in ("upstream", "downstream"):
                    value = level + 0.01 * seed - 0.001 * step
                    curves.append(
                        {
                            "run": run,
                            "step": step,
                            "tokens": 0.0,
                            "domain": domain,
                            "metric": "gap_loss",
                            "value": value,
                        }
                    )
    chains = {"a": ("t1_a", "t2_a"), "b": ("t1_b", "t2_b"), "missing": ("t1_c", "t2_c")}
    fig = plots.plot_task_sequence(pd.DataFrame(runs), pd.DataFrame(curves), chains, steps=20)
    ax = fig.axes[0]
    lines = [line for line in ax.get_lines() if line.get_label().startswith(("a ", "b "))]
    assert [line.get_label() for line in lines] == ["a (n=3 seeds)", "b (n=3 seeds)"]
    xs, ys = lines[0].get_data()
    assert list(xs) == [0, 10, 20, 20, 30, 40]  # task 2's steps after task 1's
    assert ys[0] == pytest.approx(4.02) and ys[3] == pytest.approx(3.02)  # the mean over seeds
    assert len(ax.collections) == 2  # a 95 % band per chain drawn


def test_the_figures_draw_the_collected_numbers(sweep):
    """What the notebooks plot is the table's data: one point per finished run on the frontier,
    one line per finished run and domain with that run's curve."""
    from cpt.analysis import plots

    collect(sweep)
    runs, curves = plots.load(sweep)
    finished = runs[runs["status"] == "finished"]
    frontier = plots.plot_replay_frontier(runs).axes[0]
    drawn = {tuple(p) for line in frontier.lines for p in line.get_xydata().tolist()}
    assert drawn == set(
        zip(
            finished["final/val/upstream/loss"].tolist(),
            finished["final/val/downstream/loss"].tolist(),
        )
    )
    rewarming = plots.plot_rewarming(runs, curves)
    for ax, domain in zip(rewarming.axes, ("upstream", "downstream")):
        assert len(ax.lines) == len(finished)
        for line, (_, row) in zip(ax.lines, finished.iterrows()):
            want = curves[
                (curves["run"] == row["run"])
                & (curves["domain"] == domain)
                & (curves["metric"] == "loss")
            ]
            assert line.get_ydata().tolist() == want["value"].tolist()
            assert line.get_xdata().tolist() == want["tokens"].tolist()


def test_every_line_is_labelled_by_every_key_the_sweep_varies(sweep):
    """Labels come from the sweep's own overrides: both swept keys, though only one differs
    between the finished runs (the invalid max LR never trained)."""
    from cpt.analysis import plots

    collect(sweep)
    runs, curves = plots.load(sweep)
    assert plots.swept(runs) == ["callbacks.replay.fraction", "optim.max_lr"]
    figure = plots.plot_rewarming(runs, curves)
    labels = [line.get_label() for line in figure.axes[0].lines]
    assert len(labels) == 2 and len(set(labels)) == 2
    assert all("fraction=" in label and "max_lr=" in label for label in labels)
