"""Verdicts follow from the seeds' intervals; generated sections replace only themselves."""

from __future__ import annotations

import pandas as pd

from cpt.reproduce import claims as paper_claims
from cpt.reproduce import verdicts as v

COLUMN = "final/val/downstream/loss"


def test_claims_name_each_shift_and_skip_points_the_grid_lacks():
    rows = []
    for shift, offset in (("strong", 0.0), ("weak", -1.0)):
        for lr, w, down in (
            (4e-3, 0.0, 3.8),
            (4e-3, 0.01, 3.8),
            (2e-3, 0.01, 3.9),
            (2e-3, 0.0, 3.9),
            (2e-3, 0.1, 3.9),
            (1e-3, 0.01, 4.0),
        ):
            for seed, noise in enumerate((0.0, 0.002, -0.002)):
                rows.append(
                    {
                        "run": f"{shift}{lr}{w}{seed}",
                        "status": "finished",
                        "seed": seed,
                        "shift": shift,
                        "optim.max_lr": lr,
                        "schedule.warmup": w,
                        COLUMN: down + offset + noise,
                        "final/val/upstream/loss": 5 - down + noise,
                        "rise/upstream": 0.1 + 10 * noise,  # the seed's own effect, large
                        "rise/downstream": 0.05 + 10 * noise,
                    }
                )
    grid = pd.DataFrame(rows)  # the runs, one per seed: claims pair them
    claims = paper_claims.gupta_claims(grid, grid.iloc[0:0])  # no constant: its claim left out
    assert {c.where for c in claims} == {"strong shift", "weak shift"}
    adapts = [c for c in claims if c.claim.startswith("A higher max LR adapts more")]
    assert [c.verdict for c in adapts] == [v.REPRODUCES, v.REPRODUCES]
    warmup = [c for c in claims if c.claim.startswith("The warm-up length")]
    assert [c.verdict for c in warmup] == [v.REPRODUCES, v.REPRODUCES]
    assert not any("constant" in c.claim for c in claims)
    table = v.claims_table(claims)
    assert table.count("\n") == len(claims) + 1 and "| weak shift | **reproduces** |" in table
    corner = [c for c in claims if c.claim.startswith("The aggressive corner")]
    assert len(corner) == 4 and all("one-sample" in c.numbers for c in corner)
    # with the constant-LR arm: the paper setting's rise is judged against it, seed by seed
    constant = grid[(grid["optim.max_lr"] == 2e-3) & (grid["schedule.warmup"] == 0.01)].copy()
    constant["rise/upstream"] -= 0.03  # every seed rises 0.03 less under a constant LR
    constant["rise/downstream"] += 0.03  # ... and 0.03 more on the new data
    with_constant = paper_claims.gupta_claims(grid, constant)
    rises = [c for c in with_constant if c.claim.startswith("Re-warming to the upstream's max LR")]
    assert [c.verdict for c in rises] == [v.REPRODUCES, v.FAILS] * 2
    assert all("paired, 3 seeds" in c.numbers for c in rises)


def test_replay_claims_pair_the_arms_and_compare_the_union_by_welch():
    rows = []
    for shift in ("strong", "weak"):
        for fraction, up in ((0.0, 4.5), (0.05, 4.3), (0.25, 4.1)):
            for seed, noise in ((1, 0.05), (2, -0.04), (3, 0.0)):  # the seed's own effect
                rows.append(
                    {
                        "run": f"{shift}{fraction}{seed}",
                        "status": "finished",
                        "seed": seed,
                        "shift": shift,
                        "callbacks.replay.fraction": fraction,
                        "final/val/upstream/loss": up + noise,
                        COLUMN: 3.0 + fraction + noise,
                    }
                )
    union = pd.DataFrame(
        [
            {"run": f"u{shift}{seed}", "status": "finished", "seed": seed, "shift": shift,
             "final/val/upstream/loss": 4.0 + 0.01 * seed, COLUMN: 3.5 + 0.01 * seed}
            for shift in ("strong", "weak")
            for seed in (1, 2, 3)
        ]
    )  # fmt: skip
    claims = paper_claims.replay_claims(pd.DataFrame(rows), union)
    cuts = [c for c in claims if c.claim.startswith("5 % replay cuts forgetting")]
    assert [c.verdict for c in cuts] == [v.REPRODUCES] * 2  # paired: the seeds' noise cancels
    assert all("paired, 3 seeds" in c.numbers for c in cuts)
    unions = [c for c in claims if "union" in c.claim]
    assert [c.where for c in unions] == ["strong shift"] * 2 + ["weak shift"] * 2
    assert all("Welch" in c.numbers for c in unions)
    assert "25% replay" in unions[0].claim and "5% replay" in unions[2].claim


def _runs(points: dict[str, dict], shifts=("strong", "weak"), seeds=(1, 2, 3)) -> pd.DataFrame:
    """Runs at each point (its keys), per shift and seed, with every column a claim reads."""
    rows = []
    for name, keys in points.items():
        for shift in shifts:
            for seed in seeds:
                row = {"run": f"{name}/{shift}/{seed}", "status": "finished", "seed": seed}
                row.update(shift=shift, **keys)
                for column in (COLUMN, "final/val/upstream/loss", "rise/upstream",
                               "rise/downstream", "fall/upstream"):  # fmt: skip
                    row[column] = 4.0 + 0.01 * seed + 0.001 * len(rows)
                rows.append(row)
    return pd.DataFrame(rows)


def test_every_run_of_the_gupta_and_replay_twins_enters_a_claim():
    """Leaving out any one point of a twin's design loses a claim: no run is trained for
    nothing."""
    from cpt.reproduce.design import GUPTA_POINTS

    points = {
        name: {"optim.max_lr": lr, "schedule.warmup": w} for name, (lr, w) in GUPTA_POINTS.items()
    }
    constant = _runs({"constant": {}})
    full = len(paper_claims.gupta_claims(_runs(points), constant))
    for name in points:
        rest = {n: k for n, k in points.items() if n != name}
        assert len(paper_claims.gupta_claims(_runs(rest), constant)) < full, name
    assert len(paper_claims.gupta_claims(_runs(points), constant.iloc[0:0])) < full

    fractions = {f: {"callbacks.replay.fraction": f} for f in (0.0, 0.05, 0.25)}
    union = _runs({"union": {}})
    for shift in ("strong", "weak"):
        full = paper_claims.replay_claims(_runs(fractions, [shift]), union)
        for f in fractions:
            rest = {k: x for k, x in fractions.items() if k != f}
            assert len(paper_claims.replay_claims(_runs(rest, [shift]), union)) < len(full), f
        assert len(paper_claims.replay_claims(_runs(fractions, [shift]), union.iloc[0:0])) < len(
            full
        )


def test_guo_claims_are_the_papers_on_same_domain_tasks_per_shift():
    task_columns = ("drop/next_line_downstream", "regain/next_line_downstream",
                    "drop/next_line_upstream", "rise/upstream",
                    "task_gap/next_line_downstream/acc_norm/area",
                    "final/task/next_line_downstream/acc_norm")  # fmt: skip
    rows = []
    for shift in ("strong", "weak"):
        for mitigation, shrink in (("none", 1.0), ("subcorpus", 0.5), ("quality", 0.9),
                                   ("mixture", 0.3)):  # fmt: skip
            for seed in (1, 2, 3):
                row = {"run": f"{shift}/{mitigation}/{seed}", "status": "finished", "seed": seed,
                       "shift": shift, "mitigation": mitigation}  # fmt: skip
                for column in task_columns:
                    row[column] = 0.1 * shrink + 0.001 * seed
                row["final/task/next_line_downstream/acc_norm"] = 0.5 - 0.1 * shrink
                if shift == "strong":  # the general-abilities probe
                    row["drop/next_line_probe"] = 0.08 + 0.001 * seed
                    row["loss/next_line_probe"] = 0.001 * seed
                rows.append(row)
    runs = pd.DataFrame(rows)
    claims = paper_claims.guo_claims(runs)
    by = {(c.where, c.claim.split(" (")[0]): c for c in claims}
    assert {w for w, _ in by} == {"strong shift", "weak shift"}
    probe = [c for c in claims if "next_line_probe" in c.claim]
    assert {c.where for c in probe} == {"strong shift"} and len(probe) == 2
    assert [c.verdict for c in probe] == [v.REPRODUCES, v.REPRODUCES]  # dips 0.08, ends within
    sooner = [c for c in claims if c.claim.startswith("A sub-corpus")]
    assert [c.verdict for c in sooner] == [v.REPRODUCES] * 2 and "paired" in sooner[0].numbers
    assert all("next_line_downstream" in c.claim for c in claims if "quality" in c.claim)
    for left_out in ("subcorpus", "quality", "mixture"):  # each mitigation enters a claim
        rest = paper_claims.guo_claims(runs[runs["mitigation"] != left_out])
        assert len(rest) < len(claims), left_out


def test_each_upstream_revision_is_compared_with_the_one_before_it():
    rows = [
        {"run": f"{step}/{seed}", "status": "finished", "seed": seed, "upstream step": step,
         COLUMN: 4.0 - step / 10000 + 0.001 * seed}
        for step in (750, 1500, 3000)
        for seed in (1, 2, 3)
    ]  # fmt: skip
    claims = paper_claims.revision_claims(pd.DataFrame(rows))
    assert ["1500 vs 750" in claims[0].claim, "3000 vs 1500" in claims[1].claim] == [True, True]
    assert [c.verdict for c in claims] == [v.REPRODUCES, v.REPRODUCES]
