"""The papers' claims, each judged from the 95 % intervals of seeded runs.

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
from pathlib import Path

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


def lower(a: pd.Series, b: pd.Series, column: str) -> tuple[str, str]:
    """Claim: A's `column` is lower than B's."""
    (ma, _, ca), (mb, _, cb) = _stats(a, column), _stats(b, column)
    d, ci = ma - mb, math.hypot(ca, cb)
    numbers = f"{show(a, column)} vs {show(b, column)}: difference {d:+.3f} ± {ci:.3f} (95 %)"
    if math.isnan(ci):
        return "not resolved (one seed)", numbers
    return (REPRODUCES if d + ci < 0 else FAILS if d - ci > 0 else OPEN), numbers


def same(a: pd.Series, b: pd.Series, column: str, margin: float = MARGIN) -> tuple[str, str]:
    """Claim: A's `column` matches B's within `margin`."""
    (ma, _, ca), (mb, _, cb) = _stats(a, column), _stats(b, column)
    d, ci = ma - mb, math.hypot(ca, cb)
    numbers = (
        f"{show(a, column)} vs {show(b, column)}: difference {d:+.3f} ± {ci:.3f} (95 %), "
        f"margin {margin}"
    )
    if math.isnan(ci):
        return "not resolved (one seed)", numbers
    inside = abs(d) + ci < margin
    outside = abs(d) - ci > margin
    return (REPRODUCES if inside else FAILS if outside else OPEN), numbers


def no_worse(a: pd.Series, b: pd.Series, column: str, margin: float = MARGIN) -> tuple[str, str]:
    """Claim: A's `column` (lower is better) is not above B's by more than `margin`."""
    (ma, _, ca), (mb, _, cb) = _stats(a, column), _stats(b, column)
    d, ci = ma - mb, math.hypot(ca, cb)
    numbers = (
        f"{show(a, column)} vs {show(b, column)}: difference {d:+.3f} ± {ci:.3f} (95 %), "
        f"margin {margin}"
    )
    if math.isnan(ci):
        return "not resolved (one seed)", numbers
    return (REPRODUCES if d + ci < margin else FAILS if d - ci > margin else OPEN), numbers


def rises(a: pd.Series, column: str, margin: float = MARGIN) -> tuple[str, str]:
    """Claim: A's `column` (a rise) is above `margin`."""
    mean, std, ci = _stats(a, column)
    numbers = f"{show(a, column)} (95 % ± {ci:.3f}), margin {margin}"
    if math.isnan(ci):
        return "not resolved (one seed)", numbers
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


def summary(results: dict[str, str]) -> str:
    """One table of every paper's verdicts (without their numbers), from each paper's
    `results.md` text: the claims tables' rows."""
    lines = ["| paper | claim | where | verdict |", "|---|---|---|---|"]
    for paper, text in results.items():
        for row in text.splitlines():
            cells = [c.strip() for c in row.strip().strip("|").split("|")]
            if len(cells) == 4 and cells[2].startswith("**") and cells[0] != "claim":
                lines.append(f"| {paper} | {cells[0]} | {cells[1]} | {cells[2]} |")
    return "# Summary\n\n" + "\n".join(lines) + "\n"


def revision_step(init: object) -> int:
    match = re.search(r"step(\d+)", str(init))
    return int(match.group(1)) if match else -1


def embed_figures(text: str, paper: str, folder: Path) -> str:
    """The results' `Figures: a.png, b.png` line as images of their copies in `folder` (named
    `<paper>_a.png`), for the docs; names without a copy stay as text."""

    def images(match: re.Match) -> str:
        names = match.group(1).split(", ")
        shown = [
            f"![{paper} {n}]({folder.name}/{paper}_{n})"
            for n in names
            if (folder / f"{paper}_{n}").is_file()
        ]
        rest = [n for n in names if not (folder / f"{paper}_{n}").is_file()]
        return "\n\n".join(shown + ([f"Figures: {', '.join(rest)}"] if rest else []))

    return re.sub(r"^Figures: (.+)$", images, text, flags=re.M)


def update_doc(path: Path, name: str, text: str) -> bool:
    """Replace the generated section `name` of a Markdown file (between `<!-- reproduce:NAME -->`
    and `<!-- /reproduce:NAME -->`) with `text`, its headings two levels down (under the doc's section); False when the file
    has no such section."""
    if not path.is_file():
        return False
    doc = path.read_text()
    start, end = f"<!-- reproduce:{name} -->", f"<!-- /reproduce:{name} -->"
    if start not in doc or end not in doc:
        return False
    body = re.sub(r"^(#+) ", r"##\1 ", text.strip(), flags=re.M)
    before, rest = doc.split(start, 1)
    after = rest.split(end, 1)[1]
    path.write_text(f"{before}{start}\n{body}\n{end}{after}")
    return True


# ---- the papers' claims ----------------------------------------------------------------------------
def gupta_claims(grid: pd.DataFrame, constant: pd.DataFrame) -> list[Claim]:
    claims: list[Claim] = []
    for shift in sorted(grid["shift"].dropna().unique()):

        def at(lr, w, shift=shift):
            return pick(grid, shift=shift, optim__max_lr=lr, schedule__warmup=w)  # noqa: E731

        fast, base, slow = at(4e-3, 0.0), at(2e-3, 0.01), at(1e-3, 0.01)
        const = pick(constant, shift=shift)
        where = f"{shift} shift"
        if fast is not None:
            judge(
                claims,
                "Re-warming (max LR 4e-3, no warm-up) first raises the upstream loss",
                where,
                rises(fast, "rise/upstream"),
            )
            judge(
                claims,
                "... and the downstream loss (a transient rise on the new data)",
                where,
                rises(fast, "rise/downstream"),
            )
        if base is not None and const is not None:
            judge(
                claims,
                "Re-warming ends lower downstream than a constant LR (max LR 2e-3, warm-up 1 % vs constant 2e-4)",
                where,
                lower(base, const, "final/val/downstream/loss"),
            )
        if at(4e-3, 0.01) is not None and slow is not None:
            judge(
                claims,
                "A higher max LR adapts more (downstream, 4e-3 vs 1e-3, warm-up 1 %)",
                where,
                lower(at(4e-3, 0.01), slow, "final/val/downstream/loss"),
            )
            judge(
                claims,
                "... and forgets more (upstream, 1e-3 vs 4e-3)",
                where,
                lower(slow, at(4e-3, 0.01), "final/val/upstream/loss"),
            )
        if at(2e-3, 0.0) is not None and base is not None:
            judge(
                claims,
                "The warm-up length barely matters (downstream, warm-up 0 vs 1 %, max LR 2e-3)",
                where,
                same(at(2e-3, 0.0), base, "final/val/downstream/loss"),
            )
        if base is not None:
            judge(
                claims,
                "The upstream loss recovers later in the run (its fall from the peak to the end, max LR 2e-3)",
                where,
                rises(base, "fall/upstream"),
            )
    return claims


def revision_claims(revisions: pd.DataFrame) -> list[Claim]:
    steps = sorted(s for s in revisions["upstream step"] if s > 0)
    if len(steps) < 2:
        return []
    last = revisions[revisions["upstream step"] == steps[-1]].iloc[0]
    first = revisions[revisions["upstream step"] == steps[0]].iloc[0]
    claims: list[Claim] = []
    judge(
        claims,
        f"An earlier upstream checkpoint does not help (downstream, step {steps[-1]} vs {steps[0]}: the later one ends lower)",
        "strong shift",
        lower(last, first, "final/val/downstream/loss"),
    )
    return claims


def replay_claims(grid: pd.DataFrame, union: pd.DataFrame) -> list[Claim]:
    claims: list[Claim] = []
    for shift in sorted(grid["shift"].dropna().unique()):
        at = lambda f, shift=shift: pick(grid, shift=shift, callbacks__replay__fraction=f)  # noqa: E731
        none, five, quarter = at(0.0), at(0.05), at(0.25)
        where = f"{shift} shift"
        if none is not None and five is not None:
            judge(
                claims,
                "5 % replay cuts forgetting (upstream, 5 % vs none)",
                where,
                lower(five, none, "final/val/upstream/loss"),
            )
            judge(
                claims,
                "... at a small downstream cost (5 % no worse than none)",
                where,
                no_worse(five, none, "final/val/downstream/loss"),
            )
        u = pick(union, shift=shift)
        best = quarter if shift == "strong" else five
        if u is not None and best is not None:
            share = "25 %" if shift == "strong" else "5 %"
            judge(
                claims,
                f"CPT with {share} replay is as good as the union baseline (upstream, no worse)",
                where,
                no_worse(best, u, "final/val/upstream/loss"),
            )
            judge(
                claims,
                f"CPT with {share} replay is as good as the union baseline (downstream, no worse)",
                where,
                no_worse(best, u, "final/val/downstream/loss"),
            )
    return claims


def infinite_claims(table: pd.DataFrame) -> list[Claim]:
    """`table` indexed by the chain's run names (cpt.analysis.reproduce.INFINITE)."""
    get = lambda name: table.loc[name] if name in table.index else None  # noqa: E731
    claims: list[Claim] = []
    annealed, cosine = get("task1_infinite_annealed"), get("task1_cosine")
    if annealed is not None and cosine is not None:
        judge(
            claims,
            "Task 1: infinite + anneal is as good as cosine (downstream, no worse)",
            "strong shift",
            no_worse(annealed, cosine, "final/val/downstream/loss"),
        )
        judge(
            claims,
            "Task 1: infinite + anneal is as good as cosine (upstream, no worse)",
            "strong shift",
            no_worse(annealed, cosine, "final/val/upstream/loss"),
        )
    constant = get("task1_infinite")
    if constant is not None and annealed is not None:
        judge(
            claims,
            "Task 1: the anneal is what the constant phase defers (annealed lower downstream)",
            "strong shift",
            lower(annealed, constant, "final/val/downstream/loss"),
        )
    carried, rewarmed = get("task2_infinite_annealed"), get("task2_cosine")
    if carried is not None and rewarmed is not None:
        judge(
            claims,
            "Task 2: carrying the constant forgets task 1 less than re-warming (task 1's domain at the end)",
            "strong shift",
            lower(carried, rewarmed, "final/val/downstream/loss"),
        )
        judge(
            claims,
            "Task 2: ... and its gap on task 1's domain rises less",
            "strong shift",
            lower(carried, rewarmed, "rise/downstream"),
        )
        judge(
            claims,
            "Task 2: ... and ends at least as well on task 2's domain (no worse)",
            "strong shift",
            no_worse(carried, rewarmed, "final/val/upstream/loss"),
        )
    return claims


def guo_claims(table: pd.DataFrame) -> list[Claim]:
    claims: list[Claim] = []
    at = lambda m: pick(table, mitigation=m)  # noqa: E731
    none = at("none")
    if none is None:
        return claims
    where = "strong shift"
    judge(
        claims,
        "The stability gap: the new domain's loss first rises",
        where,
        rises(none, "rise/downstream"),
    )
    for column in sorted(
        c.removesuffix("/mean") for c in table if re.fullmatch(r"drop/[^/]+/mean", c)
    ):
        task = column.split("/")[1]
        judge(
            claims,
            f"The stability gap on task accuracy: {task} first drops (acc_norm)",
            where,
            rises(none, column),
        )
    judge(
        claims,
        "... and the old domain's loss rises (forgetting)",
        where,
        rises(none, "rise/upstream"),
    )
    for name, text in (
        ("subcorpus", "A sub-corpus for several epochs ends lower downstream than one pass"),
        ("quality", "A high-quality subset ends lower downstream"),
    ):
        if at(name) is not None:
            judge(claims, text, where, lower(at(name), none, "final/val/downstream/loss"))
    if at("mixture") is not None:
        judge(
            claims,
            "A mixture with pre-training-like data shrinks the old domain's gap (area)",
            where,
            lower(at("mixture"), none, "gap/upstream/area"),
        )
    return claims
