"""How a claim is judged from seeded runs: the comparisons behind every verdict of make reproduce.

A claim compares grid points, each the finished runs of one setting (one per seed; `pick`). Arms
of one twin that share a seed share the data order and the starting weights, so a difference is
judged **paired**: the per-seed differences A_s - B_s over the seeds both ran, their mean and the
half-width of its 95 % Student-t interval (`t(0.975, n - 1) * sd / sqrt(n)`, as
`scipy.stats.ttest_rel`). Arms that share nothing but the seed's number (the union baseline, each
seed its own initialization) are judged by **Welch's** interval (`ttest_ind(equal_var=False)`); a
one-sample claim (a rise) by the one-sample interval. A verdict follows from the interval:
- "A lower than B": **reproduces** when the whole interval of A - B is below zero, **does not
  reproduce** when it is above, else **not resolved at this scale**;
- "A matches B" (equal up to MARGIN): reproduces when the interval of A - B lies inside
  (-MARGIN, MARGIN), does not when it lies outside, else not resolved;
- "A is no worse than B" (lower is better, up to MARGIN): reproduces when the interval of A - B
  lies below MARGIN, does not when it lies above, else not resolved;
- "A rises" (a one-sample claim: a stability-gap rise): reproduces when A's interval is above
  MARGIN, does not when it is below, else not resolved; "A stays below" (`at_most`) the reverse.
Fewer than two seeds (or two in common, paired) give no interval: "not resolved (one seed)".
Every claim's numbers name its statistic: `paired, 3 seeds`, `Welch` or `one-sample`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import pandas as pd

from cpt.analysis.seeds import SEED, t95

MARGIN = 0.02  # nats of loss (or accuracy): "the same" means closer than this
REPRODUCES, FAILS, OPEN = "reproduces", "does not reproduce", "not resolved at this scale"
ONE_SEED = "not resolved (one seed)"


@dataclass
class Claim:
    claim: str
    where: str  # which shift or setting
    verdict: str
    numbers: str


@dataclass(frozen=True)
class Interval:
    """A mean (of a difference, or of one arm) and the half-width of its 95 % interval."""

    mean: float
    half: float  # NaN: no interval (fewer than two seeds)
    statistic: str  # "paired, n seeds" | "Welch" | "one-sample"


def derive(runs: pd.DataFrame) -> pd.DataFrame:
    """Per run, what claims compare beyond the summary's columns: the stability gap's rise above the
    start (`rise/<d>`), its fall from the peak to the end (`fall/<d>`), a task's drop below its
    start (`drop/<task>`, acc_norm), its regain from the lowest point to the end (`regain/<task>`)
    and what it lost from start to end (`loss/<task>`)."""
    runs = runs.copy()
    for column in list(runs.columns):
        match = re.fullmatch(r"gap/([^/]+)/peak", column)
        if match:
            d = match.group(1)
            runs[f"rise/{d}"] = runs[column] - runs[f"gap/{d}/initial"]
            if f"gap/{d}/final" in runs:
                runs[f"fall/{d}"] = runs[column] - runs[f"gap/{d}/final"]
        match = re.fullmatch(r"task_gap/([^/]+)/acc_norm/peak", column)
        if match:
            task = match.group(1)
            runs[f"drop/{task}"] = runs[f"task_gap/{task}/acc_norm/initial"] - runs[column]
            if f"task_gap/{task}/acc_norm/final" in runs:  # back up from the lowest point
                runs[f"regain/{task}"] = runs[f"task_gap/{task}/acc_norm/final"] - runs[column]
                runs[f"loss/{task}"] = (
                    runs[f"task_gap/{task}/acc_norm/initial"]
                    - runs[f"task_gap/{task}/acc_norm/final"]
                )
    return runs


# ---- intervals ------------------------------------------------------------------------------------
def values(point: pd.DataFrame, column: str) -> pd.Series:
    """A grid point's values of `column`, one per seed (indexed by seed; missing ones dropped)."""
    if column not in point:
        return pd.Series(dtype=float)
    series = pd.to_numeric(point.set_index(SEED)[column], errors="coerce").dropna()
    return series[~series.index.duplicated()]


def one_sample(a: pd.Series) -> Interval:
    n = len(a)
    half = t95(n) * float(a.std(ddof=1)) / math.sqrt(n) if n > 1 else math.nan
    return Interval(float(a.mean()) if n else math.nan, half, "one-sample")


def paired(a: pd.Series, b: pd.Series) -> Interval:
    """The per-seed differences A_s - B_s over the seeds both arms ran."""
    common = a.index.intersection(b.index)
    d = a[common] - b[common]
    n = len(d)
    half = t95(n) * float(d.std(ddof=1)) / math.sqrt(n) if n > 1 else math.nan
    return Interval(float(d.mean()) if n else math.nan, half, f"paired, {n} seeds")


def welch(a: pd.Series, b: pd.Series) -> Interval:
    """Two independent samples, unequal variances (Welch-Satterthwaite degrees of freedom)."""
    na, nb = len(a), len(b)
    mean = float(a.mean() - b.mean()) if na and nb else math.nan
    if na < 2 or nb < 2:
        return Interval(mean, math.nan, "Welch")
    va, vb = float(a.var(ddof=1)) / na, float(b.var(ddof=1)) / nb
    if va + vb == 0:
        return Interval(mean, 0.0, "Welch")
    from scipy.stats import t

    df = (va + vb) ** 2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
    return Interval(mean, float(t.ppf(0.975, df)) * math.sqrt(va + vb), "Welch")


# ---- comparisons ----------------------------------------------------------------------------------
def show(point: pd.DataFrame, column: str) -> str:
    """A grid point's mean ± standard deviation over its seeds."""
    a = values(point, column)
    if not len(a):
        return "-"
    return f"{a.mean():.3f}" if len(a) < 2 else f"{a.mean():.3f} ± {a.std(ddof=1):.3f}"


def _difference(
    a: pd.DataFrame, b: pd.DataFrame, column: str, pair: bool, margin: float | None = None
) -> tuple[Interval, str]:
    """A - B with its 95 % interval (paired over shared seeds, or Welch), and both as text."""
    va, vb = values(a, column), values(b, column)
    i = paired(va, vb) if pair else welch(va, vb)
    numbers = (
        f"{show(a, column)} vs {show(b, column)}: difference {i.mean:+.3f} ± {i.half:.3f} "
        f"(95 %, {i.statistic})"
    )
    return i, numbers + ("" if margin is None else f", margin {margin}")


Point = pd.DataFrame | None  # a grid point's runs; None: the grid lacks it, and so its claim
Verdict = tuple[str, str] | None  # (verdict, numbers); None: a point is missing, no claim


def lower(a: Point, b: Point, column: str, pair: bool = True) -> Verdict:
    """Claim: A's `column` is lower than B's."""
    if a is None or b is None:
        return None
    i, numbers = _difference(a, b, column, pair)
    if math.isnan(i.half):
        return ONE_SEED, numbers
    d, ci = i.mean, i.half  # an interval of exactly [0, 0] (the arms equal seed by seed, as a
    # rise clipped at zero in both) excludes "lower" as surely as one above zero
    return (REPRODUCES if d + ci < 0 else FAILS if d - ci >= 0 else OPEN), numbers


def same(a: Point, b: Point, column: str, margin: float = MARGIN, pair: bool = True) -> Verdict:
    """Claim: A's `column` matches B's within `margin`."""
    if a is None or b is None:
        return None
    i, numbers = _difference(a, b, column, pair, margin)
    if math.isnan(i.half):
        return ONE_SEED, numbers
    inside, outside = abs(i.mean) + i.half < margin, abs(i.mean) - i.half > margin
    return (REPRODUCES if inside else FAILS if outside else OPEN), numbers


def no_worse(a: Point, b: Point, column: str, margin: float = MARGIN, pair: bool = True) -> Verdict:
    """Claim: A's `column` (lower is better) is not above B's by more than `margin`."""
    if a is None or b is None:
        return None
    i, numbers = _difference(a, b, column, pair, margin)
    if math.isnan(i.half):
        return ONE_SEED, numbers
    d, ci = i.mean, i.half
    return (REPRODUCES if d + ci < margin else FAILS if d - ci > margin else OPEN), numbers


def _beyond(a: Point, column: str, margin: float, above: bool) -> Verdict:
    """A one-sample claim: A's `column` lies above `margin` (`above`) or below it."""
    if a is None:
        return None
    i = one_sample(values(a, column))
    numbers = f"{show(a, column)} (95 % ± {i.half:.3f}, {i.statistic}), margin {margin}"
    if math.isnan(i.half):
        return ONE_SEED, numbers
    sign = 1 if above else -1  # below the margin is above it, mirrored
    low, high = sign * i.mean - i.half, sign * i.mean + i.half
    return (REPRODUCES if low > sign * margin else FAILS if high < sign * margin else OPEN), numbers


def rises(a: Point, column: str, margin: float = MARGIN) -> Verdict:
    """Claim: A's `column` (a rise) is above `margin`."""
    return _beyond(a, column, margin, above=True)


def at_most(a: Point, column: str, margin: float = MARGIN) -> Verdict:
    """Claim: A's `column` (a loss of accuracy, say) stays below `margin`."""
    return _beyond(a, column, margin, above=False)


def pick(runs: pd.DataFrame, **where: object) -> pd.DataFrame | None:
    """The finished runs (one per seed) whose keys (dots as `__`) equal `where`; None when the
    grid lacks them."""
    if "status" in runs:
        runs = runs[runs["status"] == "finished"]
    mask = pd.Series(True, index=runs.index)
    for key, value in where.items():
        column = key.replace("__", ".")
        if column not in runs:
            return None
        if isinstance(value, (int, float)):
            mask &= pd.to_numeric(runs[column], errors="coerce").sub(value).abs() < 1e-12
        else:
            mask &= runs[column].astype(str) == str(value)
    rows = runs[mask]
    return rows if len(rows) else None


def judge(claims: list[Claim], claim: str, where: str, result: Verdict) -> None:
    """Add the claim with its verdict; a claim whose grid point is missing is left out."""
    if result is not None:
        claims.append(Claim(claim, where, *result))


# ---- tables -----------------------------------------------------------------------------------------
def _mean_std(row: pd.Series, column: str) -> str:
    """A `runs_by_seed.csv` row's mean ± std of `column`."""
    mean, std = (float(row.get(f"{column}/{k}", math.nan)) for k in ("mean", "std"))
    if math.isnan(mean):
        return "-"
    return f"{mean:.3f}" if math.isnan(std) else f"{mean:.3f} ± {std:.3f}"


def grid_table(
    table: pd.DataFrame, keys: list[str], replayed: bool = False, tasks: bool = False
) -> str:
    """One row per grid point: n seeds, final losses (change), the gap's rise, optionally the
    replayed tokens and the built-in tasks' final accuracy; mean ± std over seeds."""
    columns = {
        "upstream loss": "final/val/upstream/loss",
        "upstream change": "forgetting/upstream",
        "downstream loss": "final/val/downstream/loss",
        "downstream change": "forgetting/downstream",
        "upstream gap rise": "rise/upstream",
        "downstream gap rise": "rise/downstream",
    }
    if replayed:
        columns["upstream tokens replayed"] = "tokens/upstream"
    if tasks:
        for name in sorted(
            c.split("/")[2] for c in table if re.fullmatch(r"final/task/[^/]+/acc_norm/mean", c)
        ):
            columns[f"{name} acc_norm"] = f"final/task/{name}/acc_norm"
            columns[f"{name} drop"] = f"drop/{name}"
    columns = {k: c for k, c in columns.items() if f"{c}/mean" in table}
    present = [k for k in keys if k in table]
    table = table.sort_values(present, kind="stable") if present and len(table) else table
    head = [*(k.split(".")[-1] for k in keys), "seeds", *columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, row in table.iterrows():
        cells = [str(row.get(k, "")) for k in keys] + [str(int(row.get("n", 0)))]
        cells += [_mean_std(row, c) for c in columns.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def claims_table(claims: list[Claim]) -> str:
    lines = ["| claim | where | verdict | numbers |", "|---|---|---|---|"]
    lines += [f"| {c.claim} | {c.where} | **{c.verdict}** | {c.numbers} |" for c in claims]
    return "\n".join(lines)
