"""Runs that differ only by their seed, aggregated: mean, standard deviation and a 95 % interval.

A finding rests on more than one run per grid point: `python -m cpt.train -m ... seed=1,2,3`
makes `seed` one of the sweep's keys, and here the finished runs are grouped by every other swept
key. For each numeric result column of `runs.csv` a group gets `<column>/mean`, `<column>/std`
(sample standard deviation) and `<column>/ci95` (the half-width of the Student-t 95 % interval of
the mean: `t(0.975, n - 1) * std / sqrt(n)`), with `n` its number of seeds; a group of one run has
no interval (NaN). `curves_by_seed` does the same per step for the curves, which the figures draw as
bands. `differs(a, b)` says whether two groups' intervals of the difference exclude zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

SEED = "seed"
NOT_RESULTS = ("run", "status", "error", SEED, "init")


def t95(n: int) -> float:
    """The two-sided 95 % Student-t quantile for `n` samples (NaN below two)."""
    if n < 2:
        return math.nan
    from scipy.stats import t

    return float(t.ppf(0.975, n - 1))


def group_keys(runs: pd.DataFrame, swept: Sequence[str]) -> list[str]:
    """The swept keys other than the seed: what tells the grid points apart."""
    return [k for k in swept if k != SEED and k in runs.columns]


def by_seed(runs: pd.DataFrame, swept: Sequence[str]) -> pd.DataFrame:
    """One row per grid point (finished runs only): n, and mean / std / ci95 of every result."""
    finished = runs[runs["status"] == "finished"]
    keys = group_keys(finished, swept)
    results = [
        c
        for c in finished.columns
        if c not in NOT_RESULTS and c not in swept and pd.api.types.is_numeric_dtype(finished[c])
    ]
    groups = finished.groupby(keys, dropna=False, sort=True) if keys else [((), finished)]
    rows = []
    for key, group in groups:
        row = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        n = len(group)
        row["n"] = n
        for column in results:
            values = group[column].dropna()
            mean = float(values.mean()) if len(values) else math.nan
            std = float(values.std(ddof=1)) if len(values) > 1 else math.nan
            row[f"{column}/mean"] = mean
            row[f"{column}/std"] = std
            row[f"{column}/ci95"] = (
                t95(len(values)) * std / math.sqrt(len(values)) if len(values) > 1 else math.nan
            )
        rows.append(row)
    return pd.DataFrame(rows)


def curves_by_seed(runs: pd.DataFrame, curves: pd.DataFrame, swept: Sequence[str]) -> pd.DataFrame:
    """Per grid point, domain, metric and step: mean, ci95 and n of the curves' values (and the
    mean tokens), for bands in the figures."""
    finished = runs[runs["status"] == "finished"]
    keys = group_keys(finished, swept)
    merged = curves.merge(finished[["run", *keys]], on="run")
    columns = [*keys, "domain", "metric", "step"]
    table = (
        merged.groupby(columns, dropna=False)
        .agg(
            mean=("value", "mean"),
            std=("value", "std"),
            n=("value", "size"),
            tokens=("tokens", "mean"),
        )
        .reset_index()
    )
    table["ci95"] = [
        t95(int(n)) * s / math.sqrt(n) if n > 1 else math.nan
        for n, s in zip(table["n"], table["std"])
    ]
    return table


def differs(mean_a: float, ci_a: float, mean_b: float, ci_b: float) -> bool | None:
    """Whether two grid points' means differ beyond both intervals combined (a conservative test:
    the half-widths add in quadrature); None when either has no interval."""
    if math.isnan(ci_a) or math.isnan(ci_b):
        return None
    return abs(mean_a - mean_b) > math.hypot(ci_a, ci_b)
