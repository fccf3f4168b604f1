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
