"""The three papers' claims, each a comparison of seeded grid points judged by
`cpt.reproduce.verdicts` (reproduces / does not reproduce / not resolved at this scale).

Every function takes the runs tables (`runs.csv` with the derived columns, one row per run and
seed): arms of one twin are compared seed by seed (paired), the union baseline by Welch."""

from __future__ import annotations

import pandas as pd

from cpt.reproduce.design import UNION_REPLAY
from cpt.reproduce.verdicts import (
    Claim,
    at_most,
    judge,
    lower,
    no_worse,
    pick,
    rises,
    same,
    values,
)


def gupta_claims(grid: pd.DataFrame, constant: pd.DataFrame) -> list[Claim]:
    """Judged at the paper's setting (the upstream's max LR 2e-3, warm-up 1 %) against the
    constant-LR arm; the aggressive corner (4e-3, no warm-up) is its own row; warm-up 0 against
    10 % (beyond Adam's horizon)."""
    claims: list[Claim] = []
    for shift in sorted(grid["shift"].dropna().unique()):

        def at(lr, w, shift=shift):
            return pick(grid, shift=shift, optim__max_lr=lr, schedule__warmup=w)  # noqa: E731

        base, fast, high, slow = at(2e-3, 0.01), at(4e-3, 0.0), at(4e-3, 0.01), at(1e-3, 0.01)
        const = pick(constant, shift=shift) if len(constant) else None
        where = f"{shift} shift"
        if base is not None and const is not None:
            for domain, text in (
                ("upstream", "the upstream loss"),
                ("downstream", "the new data's loss"),
            ):
                judge(
                    claims,
                    f"Re-warming to the upstream's max LR (2e-3, warm-up 1 %) raises {text} early "
                    "more than a constant LR 2e-4 (the gap's rise above the start)",
                    where,
                    lower(const, base, f"rise/{domain}"),
                )
            judge(
                claims,
                "Re-warming ends lower downstream than a constant LR (max LR 2e-3, warm-up 1 % vs constant 2e-4)",
                where,
                lower(base, const, "final/val/downstream/loss"),
            )
        if fast is not None:
            for domain in ("upstream", "downstream"):
                judge(
                    claims,
                    f"The aggressive corner (max LR 4e-3, no warm-up): the {domain} loss first rises",
                    where,
                    rises(fast, f"rise/{domain}"),
                )
        if high is not None and slow is not None:
            judge(
                claims,
                "A higher max LR adapts more (downstream, 4e-3 vs 1e-3, warm-up 1 %)",
                where,
                lower(high, slow, "final/val/downstream/loss"),
            )
            judge(
                claims,
                "... and forgets more (upstream, 1e-3 vs 4e-3)",
                where,
                lower(slow, high, "final/val/upstream/loss"),
            )
        if at(2e-3, 0.0) is not None and at(2e-3, 0.1) is not None:
            judge(
                claims,
                "The warm-up length barely matters (downstream, warm-up 0 vs 10 %, max LR 2e-3)",
                where,
                same(at(2e-3, 0.0), at(2e-3, 0.1), "final/val/downstream/loss"),
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
    """`revisions`: runs with an `upstream step` column (the checkpoint each continued from);
    each later checkpoint against the one before it."""
    steps = sorted(s for s in revisions["upstream step"].unique() if s > 0)
    claims: list[Claim] = []
    for earlier, later in zip(steps, steps[1:]):
        judge(
            claims,
            f"An earlier upstream checkpoint does not help (downstream, step {later} vs {earlier}: the later one ends lower)",
            "strong shift",
            lower(
                pick(revisions, **{"upstream step": later}),
                pick(revisions, **{"upstream step": earlier}),
                "final/val/downstream/loss",
            ),
        )
    return claims


def replay_claims(grid: pd.DataFrame, union: pd.DataFrame) -> list[Claim]:
    claims: list[Claim] = []
    for shift in sorted(grid["shift"].dropna().unique()):
        at = lambda f, shift=shift: pick(grid, shift=shift, callbacks__replay__fraction=f)  # noqa: E731
        none, five = at(0.0), at(0.05)
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
        quarter = at(0.25)
        if five is not None and quarter is not None:
            judge(
                claims,
                "More replay forgets less (upstream, 25 % vs 5 %)",
                where,
                lower(quarter, five, "final/val/upstream/loss"),
            )
        u = pick(union, shift=shift)
        fraction = UNION_REPLAY.get(shift)
        best = at(fraction) if fraction is not None else None
        if u is not None and best is not None:
            share = f"{fraction:.0%} replay"
            for domain in ("upstream", "downstream"):
                judge(
                    claims,
                    f"CPT with {share} is as good as the union of the tokens it saw, from scratch "
                    f"({domain}, no worse; Welch)",
                    where,
                    no_worse(best, u, f"final/val/{domain}/loss", pair=False),
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
        where = f"{shift} shift"
        annealed, cosine = get("task1_infinite_annealed"), get("task1_cosine")
        if annealed is not None and cosine is not None:
            judge(
                claims,
                "Task 1: infinite + anneal is as good as cosine (the task's domain, no worse)",
                where,
                no_worse(annealed, cosine, new),
            )
            judge(
                claims,
                "Task 1: infinite + anneal is as good as cosine (the pre-training data, no worse)",
                where,
                no_worse(annealed, cosine, old),
            )
        constant = get("task1_infinite")
        if constant is not None and annealed is not None:
            judge(
                claims,
                "Task 1: the anneal is what the constant phase defers (annealed lower)",
                where,
                lower(annealed, constant, new),
            )
        carried, rewarmed = get("task2_infinite_annealed"), get("task2_cosine")
        if carried is not None and rewarmed is not None:
            judge(
                claims,
                "Task 2: carrying the constant, then annealing, ends at least as well as re-warming and re-decaying (no worse)",
                where,
                no_worse(carried, rewarmed, new),
            )
            judge(
                claims,
                "Task 2: ... without the re-warming's early loss rise (its gap's rise is lower)",
                where,
                lower(carried, rewarmed, "rise/downstream"),
            )
            judge(
                claims,
                "Task 2: ... and forgets the pre-training data no more (no worse)",
                where,
                no_worse(carried, rewarmed, old),
            )
        unannealed = get("task2_infinite")
        if unannealed is not None and carried is not None:
            judge(
                claims,
                "Task 2: again the anneal is what the constant defers (annealed lower)",
                where,
                lower(carried, unannealed, new),
            )
    return claims


def guo_claims(table: pd.DataFrame) -> list[Claim]:
    """Guo et al.'s claims as the paper states them, on the built-in tasks whose distractors come
    from the same domain (`next_line_<domain>`, acc_norm): performance drops early and recovers;
    general abilities (`probe`: the new content in the old format, where a run has it) end no
    lower; each mitigation on the measure its claim names."""
    claims: list[Claim] = []
    shifts = sorted(table["shift"].dropna().unique()) if "shift" in table else [None]
    for shift in shifts:
        keys = {} if shift is None else {"shift": shift}
        at = lambda m, keys=keys: pick(table, mitigation=m, **keys)  # noqa: E731
        none = at("none")
        if none is None:
            continue
        where = f"{shift or 'strong'} shift"
        new, old, probe = "next_line_downstream", "next_line_upstream", "next_line_probe"
        for column, text in (
            (
                f"drop/{new}",
                f"The stability gap: the new domain's task performance first drops ({new})",
            ),
            (f"regain/{new}", f"... and recovers from its lowest point by the end ({new})"),
            (f"drop/{old}", f"The old domain's task performance drops early too ({old})"),
            ("rise/upstream", "... and the old domain's loss rises (forgetting)"),
            (
                f"drop/{probe}",
                f"General abilities dip early ({probe}: the new content in the old format)",
            ),
        ):
            if values(none, column).size:
                judge(claims, text, where, rises(none, column))
        if values(none, f"loss/{probe}").size:
            judge(
                claims,
                f"... and are not forgotten by the end ({probe}: start minus end, at most the margin)",
                where,
                at_most(none, f"loss/{probe}"),
            )
        sub, quality, mixture = at("subcorpus"), at("quality"), at("mixture")
        area = f"task_gap/{new}/acc_norm/area"
        if sub is not None:
            judge(
                claims,
                f"A sub-corpus for several epochs recovers sooner (the area of {new}'s dip below its start, within the budget)",
                where,
                lower(sub, none, area),
            )
        if quality is not None:
            judge(
                claims,
                f"A high-quality subset (judged by a model of the new domain) ends higher on the new domain's task ({new})",
                where,
                lower(none, quality, f"final/task/{new}/acc_norm"),
            )
        if mixture is not None:
            judge(
                claims,
                f"A mixture with pre-training-like data shrinks the old domain's early drop ({old})",
                where,
                lower(mixture, none, f"drop/{old}"),
            )
    return claims
