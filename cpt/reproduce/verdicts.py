"""How a claim is judged from seeded runs: the comparisons behind every verdict of make reproduce.

A claim compares grid points of `runs_by_seed.csv` (`cpt.analysis.seeds`): mean, standard deviation
and 95 % half-width over seeds. The difference of two means gets the half-width
`hypot(ci_a, ci_b)` (conservative: the seeds' pairing is not used). A verdict follows from it:
- "A lower than B": **reproduces** when the whole interval of A - B is below zero, **does not
  reproduce** when it is above, else **not resolved at this scale**;
- "A matches B" (equal up to MARGIN): reproduces when the interval of A - B lies inside
  (-MARGIN, MARGIN), does not when it lies outside, else not resolved;
- "A is no worse than B" (lower is better, up to MARGIN): reproduces when the interval of A - B
  lies below MARGIN, does not when it lies above, else not resolved;
- "A rises" (a one-sample claim: a stability-gap rise): reproduces when A's interval is above
  MARGIN, does not when it is below, else not resolved.
A point with one seed has no interval: its claims are "not resolved (one seed)".
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import pandas as pd

MARGIN = 0.02  # nats of loss (or accuracy): "the same" means closer than this
REPRODUCES, FAILS, OPEN = "reproduces", "does not reproduce", "not resolved at this scale"


@dataclass
class Claim:
    claim: str
    where: str  # which shift or setting
    verdict: str
    numbers: str


def derive(runs: pd.DataFrame) -> pd.DataFrame:
    """Per run, what claims compare beyond the summary's columns: the stability gap's rise above the
    start (`rise/<d>`), its fall from the peak to the end (`fall/<d>`), a task's drop below its
    start (`drop/<task>`)."""
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
            runs[f"drop/{match.group(1)}"] = (
                runs[f"task_gap/{match.group(1)}/acc_norm/initial"] - runs[column]
            )
    return runs


# ---- comparisons ----------------------------------------------------------------------------------
def _stats(row: pd.Series, column: str) -> tuple[float, float, float]:
    return tuple(float(row.get(f"{column}/{k}", math.nan)) for k in ("mean", "std", "ci95"))


def show(row: pd.Series, column: str) -> str:
    mean, std, _ = _stats(row, column)
    if math.isnan(mean):
        return "-"
    return f"{mean:.3f}" if math.isnan(std) else f"{mean:.3f} ± {std:.3f}"


def _difference(
    a: pd.Series, b: pd.Series, column: str, margin: float | None = None
) -> tuple[float, float, str]:
    """A - B, the half-width of its 95 % interval, and both as text."""
    (ma, _, ca), (mb, _, cb) = _stats(a, column), _stats(b, column)
    d, ci = ma - mb, math.hypot(ca, cb)
    numbers = f"{show(a, column)} vs {show(b, column)}: difference {d:+.3f} ± {ci:.3f} (95 %)"
    return d, ci, numbers + ("" if margin is None else f", margin {margin}")


ONE_SEED = "not resolved (one seed)"


def lower(a: pd.Series, b: pd.Series, column: str) -> tuple[str, str]:
    """Claim: A's `column` is lower than B's."""
    d, ci, numbers = _difference(a, b, column)
    if math.isnan(ci):
        return ONE_SEED, numbers
    return (REPRODUCES if d + ci < 0 else FAILS if d - ci > 0 else OPEN), numbers


def same(a: pd.Series, b: pd.Series, column: str, margin: float = MARGIN) -> tuple[str, str]:
    """Claim: A's `column` matches B's within `margin`."""
    d, ci, numbers = _difference(a, b, column, margin)
    if math.isnan(ci):
        return ONE_SEED, numbers
    inside, outside = abs(d) + ci < margin, abs(d) - ci > margin
    return (REPRODUCES if inside else FAILS if outside else OPEN), numbers


def no_worse(a: pd.Series, b: pd.Series, column: str, margin: float = MARGIN) -> tuple[str, str]:
    """Claim: A's `column` (lower is better) is not above B's by more than `margin`."""
    d, ci, numbers = _difference(a, b, column, margin)
    if math.isnan(ci):
        return ONE_SEED, numbers
    return (REPRODUCES if d + ci < margin else FAILS if d - ci > margin else OPEN), numbers


def rises(a: pd.Series, column: str, margin: float = MARGIN) -> tuple[str, str]:
    """Claim: A's `column` (a rise) is above `margin`."""
    mean, std, ci = _stats(a, column)
    numbers = f"{show(a, column)} (95 % ± {ci:.3f}), margin {margin}"
    if math.isnan(ci):
        return ONE_SEED, numbers
    return (REPRODUCES if mean - ci > margin else FAILS if mean + ci < margin else OPEN), numbers


def pick(table: pd.DataFrame, **where: object) -> pd.Series | None:
    """The grid point whose keys (dots as `__`) equal `where`; None when the grid lacks it."""
    mask = pd.Series(True, index=table.index)
    for key, value in where.items():
        column = key.replace("__", ".")
        if column not in table:
            return None
        if isinstance(value, (int, float)):
            mask &= pd.to_numeric(table[column], errors="coerce").sub(value).abs() < 1e-12
        else:
            mask &= table[column].astype(str) == str(value)
    rows = table[mask]
    return rows.iloc[0] if len(rows) else None


def judge(claims: list[Claim], claim: str, where: str, result: tuple[str, str] | None) -> None:
    if result is not None:
        claims.append(Claim(claim, where, *result))


# ---- tables -----------------------------------------------------------------------------------------
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
        cells += [show(row, c) for c in columns.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def claims_table(claims: list[Claim]) -> str:
    lines = ["| claim | where | verdict | numbers |", "|---|---|---|---|"]
    lines += [f"| {c.claim} | {c.where} | **{c.verdict}** | {c.numbers} |" for c in claims]
    return "\n".join(lines)
