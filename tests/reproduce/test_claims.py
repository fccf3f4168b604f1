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
