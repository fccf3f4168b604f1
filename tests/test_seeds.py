"""Runs that differ only by seed: aggregated per grid point, drawn as bands and error bars."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from cpt.analysis import plots
from cpt.analysis.seeds import by_seed, curves_by_seed, differs, t95

SWEPT = ["callbacks.replay.fraction", "seed"]


def _runs(values: dict[float, list[float]], failed: int = 1) -> pd.DataFrame:
    rows = []
    for fraction, losses in values.items():
        for seed, loss in enumerate(losses):
            rows.append(
                {
                    "run": f"{len(rows)}_fraction={fraction},seed={seed}",
                    "status": "finished",
                    "callbacks.replay.fraction": fraction,
                    "seed": seed,
                    "final/val/upstream/loss": loss,
                    "final/val/downstream/loss": 5 - loss,
                    "steps": 10,
                }
            )
    rows += [
        {"run": f"x{i}", "status": "failed", "callbacks.replay.fraction": 0.5, "seed": 9}
        for i in range(failed)
    ]
    return pd.DataFrame(rows)


def test_each_grid_point_gets_mean_std_and_a_student_t_interval():
    runs = _runs({0.0: [4.0, 4.2, 4.4], 0.25: [3.9, 4.0, 4.1], 0.5: [3.7]})
    table = by_seed(runs, SWEPT).set_index("callbacks.replay.fraction")
    assert table["n"].to_dict() == {0.0: 3, 0.25: 3, 0.5: 1}  # the failed run is not a seed
    row = table.loc[0.0]
    assert row["final/val/upstream/loss/mean"] == pytest.approx(4.2)
    assert row["final/val/upstream/loss/std"] == pytest.approx(0.2)
    assert row["final/val/upstream/loss/ci95"] == pytest.approx(4.302653 * 0.2 / math.sqrt(3))
    assert math.isnan(table.loc[0.5, "final/val/upstream/loss/ci95"])  # one run: no interval
    assert "seed/mean" not in table.columns and "steps/mean" in table.columns


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-10, 10, allow_nan=False), min_size=2, max_size=12))
def test_the_interval_is_the_t_interval_of_the_mean(values):
    table = by_seed(_runs({0.1: values}, failed=0), SWEPT)
    n = len(values)
    half = stats.t.ppf(0.975, n - 1) * np.std(values, ddof=1) / math.sqrt(n)
    assert table["final/val/upstream/loss/mean"][0] == pytest.approx(np.mean(values), abs=1e-9)
    assert table["final/val/upstream/loss/ci95"][0] == pytest.approx(half, abs=1e-9)
    assert t95(n) == pytest.approx(stats.t.ppf(0.975, n - 1))


def test_differs_only_beyond_both_intervals():
    assert differs(4.0, 0.1, 4.5, 0.1) is True
    assert differs(4.0, 0.3, 4.2, 0.3) is False
    assert differs(4.0, math.nan, 4.5, 0.1) is None


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
    runs = _runs({0.0: [4.0, 4.2, 4.4], 0.25: [3.9, 4.0, 4.1]})
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


def test_a_result_no_seed_has_is_missing_not_an_error():
    """A gap that never recovered has no recovery step in any seed: NaN, as for one seed."""
    runs = pd.DataFrame(
        {
            "run": ["a", "b", "c"],
            "status": "finished",
            "seed": [1, 2, 3],
            "gap/upstream/recovery_step": [math.nan] * 3,
            "final/val/upstream/loss": [4.0, 4.1, 4.2],
        }
    )
    row = by_seed(runs, ["seed"]).iloc[0]
    assert math.isnan(row["gap/upstream/recovery_step/mean"])
    assert math.isnan(row["gap/upstream/recovery_step/ci95"])
    assert row["final/val/upstream/loss/mean"] == pytest.approx(4.1)
