"""The three papers' claims, each a comparison of seeded grid points judged by
`cpt.reproduce.verdicts` (reproduces / does not reproduce / not resolved at this scale).

Every function takes the runs tables (`runs.csv` with the derived columns, one row per run and
seed): arms of one twin are compared seed by seed (paired), the union baseline by Welch."""

from __future__ import annotations

import pandas as pd

from cpt.reproduce.design import UNION_REPLAY
from cpt.reproduce.verdicts import (
    Claim,
    Verdict,
    at_most,
    judge,
    lower,
    no_worse,
    pick,
    rises,
    same,
    values,
)


def judged(where: str, rows: list[tuple[str, Verdict]]) -> list[Claim]:
    """The claims of `rows` (text, verdict) at `where`; one whose grid point is missing is left
    out (its verdict is None)."""
    claims: list[Claim] = []
    for text, verdict in rows:
        judge(claims, text, where, verdict)
    return claims


def gupta_claims(grid: pd.DataFrame, constant: pd.DataFrame) -> list[Claim]:
    """Judged at the paper's setting (the upstream's max LR 2e-3, warm-up 1 %) against the
    constant-LR arm; the aggressive corner (4e-3, no warm-up) is its own row; warm-up 0 against
    10 % (beyond Adam's horizon)."""
    claims: list[Claim] = []
    for shift in sorted(grid["shift"].dropna().unique()):

        def at(lr, w, shift=shift):
            return pick(grid, shift=shift, optim__max_lr=lr, schedule__warmup=w)

        base, fast, high, slow = at(2e-3, 0.01), at(4e-3, 0.0), at(4e-3, 0.01), at(1e-3, 0.01)
        const = pick(constant, shift=shift) if len(constant) else None
        rise = "Re-warming to the upstream's max LR (2e-3, warm-up 1 %) raises {} early more than a constant LR 2e-4 (the gap's rise above the start)"
        corner = "The aggressive corner (max LR 4e-3, no warm-up): the {} loss first rises"
        claims += judged(
            f"{shift} shift",
            [
                (rise.format("the upstream loss"), lower(const, base, "rise/upstream")),
                (rise.format("the new data's loss"), lower(const, base, "rise/downstream")),
                (
                    "Re-warming ends lower downstream than a constant LR (max LR 2e-3, warm-up 1 % vs constant 2e-4)",
                    lower(base, const, "final/val/downstream/loss"),
                ),
                (corner.format("upstream"), rises(fast, "rise/upstream")),
                (corner.format("downstream"), rises(fast, "rise/downstream")),
                (
                    "A higher max LR adapts more (downstream, 4e-3 vs 1e-3, warm-up 1 %)",
                    lower(high, slow, "final/val/downstream/loss"),
                ),
                (
                    "... and forgets more (upstream, 1e-3 vs 4e-3)",
                    lower(slow, high, "final/val/upstream/loss"),
                ),
                (
                    "The warm-up length barely matters (downstream, warm-up 0 vs 10 %, max LR 2e-3)",
                    same(at(2e-3, 0.0), at(2e-3, 0.1), "final/val/downstream/loss"),
                ),
                (
                    "The upstream loss recovers later in the run (its fall from the peak to the end, max LR 2e-3)",
                    rises(base, "fall/upstream"),
                ),
            ],
        )
    return claims


def revision_claims(revisions: pd.DataFrame) -> list[Claim]:
    """`revisions`: runs with an `upstream step` column (the checkpoint each continued from);
    each later checkpoint against the one before it."""
    steps = sorted(s for s in revisions["upstream step"].unique() if s > 0)
    at = lambda step: pick(revisions, **{"upstream step": step})  # noqa: E731
    return judged(
        "strong shift",
        [
            (
                f"An earlier upstream checkpoint does not help (downstream, step {later} vs {earlier}: the later one ends lower)",
                lower(at(later), at(earlier), "final/val/downstream/loss"),
            )
            for earlier, later in zip(steps, steps[1:])
        ],
    )


def replay_claims(grid: pd.DataFrame, union: pd.DataFrame) -> list[Claim]:
    claims: list[Claim] = []
    for shift in sorted(grid["shift"].dropna().unique()):
        at = lambda f, shift=shift: pick(grid, shift=shift, callbacks__replay__fraction=f)  # noqa: E731
        none, five, quarter = at(0.0), at(0.05), at(0.25)
        fraction = UNION_REPLAY.get(shift)
        best = at(fraction) if fraction is not None else None
        u = pick(union, shift=shift)
        versus = "CPT with {:.0%} replay is as good as the union of the tokens it saw, from scratch ({}, no worse; Welch)"
        claims += judged(
            f"{shift} shift",
            [
                (
                    "5 % replay cuts forgetting (upstream, 5 % vs none)",
                    lower(five, none, "final/val/upstream/loss"),
                ),
                (
                    "... at a small downstream cost (5 % no worse than none)",
                    no_worse(five, none, "final/val/downstream/loss"),
                ),
                (
                    "More replay forgets less (upstream, 25 % vs 5 %)",
                    lower(quarter, five, "final/val/upstream/loss"),
                ),
                *(
                    (
                        versus.format(fraction, domain),
                        no_worse(best, u, f"final/val/{domain}/loss", pair=False),
                    )
                    for domain in ("upstream", "downstream")
                ),
            ],
        )
    return claims


def infinite_claims(table: pd.DataFrame) -> list[Claim]:
    """`table`: runs with `variant` (cpt.reproduce.reports.INFINITE's run names), `shift` and
    `seed`. Both tasks are IID halves of the shift's domain (`downstream`), as the paper's task
    sequence splits one dataset; `upstream` is the pre-training data before both."""
    claims: list[Claim] = []
    new, old = "final/val/downstream/loss", "final/val/upstream/loss"
    for shift in sorted(table["shift"].dropna().unique()):
        get = lambda name, shift=shift: pick(table, shift=shift, variant=name)  # noqa: E731
        annealed, cosine = get("task1_infinite_annealed"), get("task1_cosine")
        constant, unannealed = get("task1_infinite"), get("task2_infinite")
        carried, rewarmed = get("task2_infinite_annealed"), get("task2_cosine")
        claims += judged(
            f"{shift} shift",
            [
                (
                    "Task 1: infinite + anneal is as good as cosine (the task's domain, no worse)",
                    no_worse(annealed, cosine, new),
                ),
                (
                    "Task 1: infinite + anneal is as good as cosine (the pre-training data, no worse)",
                    no_worse(annealed, cosine, old),
                ),
                (
                    "Task 1: the anneal is what the constant phase defers (annealed lower)",
                    lower(annealed, constant, new),
                ),
                (
                    "Task 2: carrying the constant, then annealing, ends at least as well as re-warming and re-decaying (no worse)",
                    no_worse(carried, rewarmed, new),
                ),
                (
                    "Task 2: ... without the re-warming's early loss rise (its gap's rise is lower)",
                    lower(carried, rewarmed, "rise/downstream"),
                ),
                (
                    "Task 2: ... and forgets the pre-training data no more (no worse)",
                    no_worse(carried, rewarmed, old),
                ),
                (
                    "Task 2: again the anneal is what the constant defers (annealed lower)",
                    lower(carried, unannealed, new),
                ),
            ],
        )
    return claims


def guo_claims(table: pd.DataFrame) -> list[Claim]:
    """Guo et al.'s claims as the paper states them, on the built-in tasks whose distractors come
    from the same domain (`next_line_<domain>`, acc_norm): performance drops early and recovers;
    general abilities (`probe`: the new content in the old format, where a run has it) end no
    lower; each mitigation on the measure its claim names."""
    claims: list[Claim] = []
    new, old, probe = "next_line_downstream", "next_line_upstream", "next_line_probe"
    shifts = sorted(table["shift"].dropna().unique()) if "shift" in table else [None]
    for shift in shifts:
        keys = {} if shift is None else {"shift": shift}
        at = lambda m, keys=keys: pick(table, mitigation=m, **keys)  # noqa: E731
        none = at("none")
        measured = lambda column, none=none: none is not None and values(none, column).size  # noqa: E731
        one_arm = [  # the plain run alone; a probe only where the run has one
            (f"drop/{new}", f"The stability gap: the new domain's task performance first drops ({new})", rises),
            (f"regain/{new}", f"... and recovers from its lowest point by the end ({new})", rises),
            (f"drop/{old}", f"The old domain's task performance drops early too ({old})", rises),
            ("rise/upstream", "... and the old domain's loss rises (forgetting)", rises),
            (f"drop/{probe}", f"General abilities dip early ({probe}: the new content in the old format)", rises),
            (f"loss/{probe}", f"... and are not forgotten by the end ({probe}: start minus end, at most the margin)", at_most),
        ]  # fmt: skip
        claims += judged(
            f"{shift or 'strong'} shift",
            [(text, rule(none, column)) for column, text, rule in one_arm if measured(column)]
            + [
                (
                    f"A sub-corpus for several epochs recovers sooner (the area of {new}'s dip below its start, within the budget)",
                    lower(at("subcorpus"), none, f"task_gap/{new}/acc_norm/area"),
                ),
                (
                    f"A high-quality subset (judged by a model of the new domain) ends higher on the new domain's task ({new})",
                    lower(none, at("quality"), f"final/task/{new}/acc_norm"),
                ),
                (
                    f"A mixture with pre-training-like data shrinks the old domain's early drop ({old})",
                    lower(at("mixture"), none, f"drop/{old}"),
                ),
            ],
        )
    return claims
