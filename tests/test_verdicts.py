"""Verdicts follow from the seeds' intervals; generated sections replace only themselves."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cpt.analysis import claims as paper_claims
from cpt.analysis import reports
from cpt.analysis import verdicts as v
from cpt.analysis.seeds import by_seed

COLUMN = "final/val/downstream/loss"


def point(values: list[float], **keys: object) -> pd.Series:
    """A grid point of runs_by_seed.csv from its seeds' values."""
    runs = pd.DataFrame(
        {
            "run": range(len(values)),
            "status": "finished",
            "seed": range(len(values)),
            COLUMN: values,
        }
    )
    for key, value in keys.items():
        runs[key] = value
    return by_seed(runs, [*keys, "seed"]).iloc[0]


def test_a_lower_point_reproduces_only_when_the_intervals_separate():
    low, high = point([3.90, 3.91, 3.92]), point([4.00, 4.01, 4.02])
    assert v.lower(low, high, COLUMN)[0] == v.REPRODUCES
    assert v.lower(high, low, COLUMN)[0] == v.FAILS
    noisy = point([3.80, 4.10, 3.95])  # mean 3.95, but three seeds spread over 0.3
    assert v.lower(noisy, high, COLUMN)[0] == v.OPEN
    verdict, numbers = v.lower(point([3.9]), high, COLUMN)
    assert verdict == "not resolved (one seed)" and "3.900" in numbers


@given(
    st.lists(st.floats(3, 6), min_size=2, max_size=5),
    st.lists(st.floats(3, 6), min_size=2, max_size=5),
)
def test_swapping_the_sides_of_a_lower_claim_swaps_its_verdict(a, b):
    forward, _ = v.lower(point(a), point(b), COLUMN)
    backward, _ = v.lower(point(b), point(a), COLUMN)
    flip = {v.REPRODUCES: v.FAILS, v.FAILS: v.REPRODUCES, v.OPEN: v.OPEN}
    assert backward == flip[forward]


def test_the_same_within_a_margin_needs_the_whole_interval_inside_it():
    a = point([3.900, 3.902, 3.901])
    assert v.same(a, point([3.905, 3.906, 3.904]), COLUMN)[0] == v.REPRODUCES
    assert v.same(a, point([3.990, 3.991, 3.992]), COLUMN)[0] == v.FAILS  # 0.09 apart
    assert v.same(a, point([3.85, 3.95, 3.92]), COLUMN)[0] == v.OPEN  # too noisy to tell


def test_no_worse_accepts_better_and_equal_but_not_worse_beyond_the_margin():
    a = point([3.900, 3.902, 3.901])
    assert v.no_worse(a, point([4.100, 4.101, 4.102]), COLUMN)[0] == v.REPRODUCES  # better
    assert v.no_worse(a, point([3.905, 3.906, 3.904]), COLUMN)[0] == v.REPRODUCES  # the same
    assert v.no_worse(a, point([3.800, 3.801, 3.802]), COLUMN)[0] == v.FAILS  # 0.1 worse
    assert v.no_worse(a, point([3.85, 3.95, 3.90]), COLUMN)[0] == v.OPEN


def test_a_rise_is_judged_against_the_margin():
    assert v.rises(point([0.5, 0.6, 0.55]), COLUMN)[0] == v.REPRODUCES
    assert v.rises(point([0.001, 0.002, 0.0015]), COLUMN)[0] == v.FAILS  # real, but negligible
    assert v.rises(point([0.0, 0.08, 0.01]), COLUMN)[0] == v.OPEN


def test_derived_columns_measure_the_gap_and_a_tasks_drop():
    runs = pd.DataFrame(
        {
            "gap/upstream/initial": [4.0],
            "gap/upstream/peak": [4.5],
            "gap/upstream/final": [4.2],
            "task_gap/next_line_downstream/acc_norm/initial": [0.40],
            "task_gap/next_line_downstream/acc_norm/peak": [0.31],  # the lowest point
        }
    )
    out = v.derive(runs)
    assert out["rise/upstream"][0] == pytest.approx(0.5)
    assert out["fall/upstream"][0] == pytest.approx(0.3)
    assert out["drop/next_line_downstream"][0] == pytest.approx(0.09)


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
    grid = by_seed(pd.DataFrame(rows), ["shift", "optim.max_lr", "schedule.warmup", "seed"])
    claims = paper_claims.gupta_claims(grid, grid.iloc[0:0])  # no constant: its claim left out
    assert {c.where for c in claims} == {"strong shift", "weak shift"}
    adapts = [c for c in claims if c.claim.startswith("A higher max LR adapts more")]
    assert [c.verdict for c in adapts] == [v.REPRODUCES, v.REPRODUCES]
    warmup = [c for c in claims if c.claim.startswith("The warm-up length")]
    assert [c.verdict for c in warmup] == [v.REPRODUCES, v.REPRODUCES]
    assert not any("constant" in c.claim for c in claims)
    table = v.claims_table(claims)
    assert table.count("\n") == len(claims) + 1 and "| weak shift | **reproduces** |" in table


def test_the_summary_lists_every_papers_verdicts_without_numbers():
    claims = [
        v.Claim("X helps", "weak shift", v.REPRODUCES, "1.0 vs 2.0"),
        v.Claim("Y", "strong shift", v.OPEN, "n"),
    ]
    text = "# Paper\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n" + v.claims_table(claims)
    table = reports.summary({"gupta2023": text, "guo2024": v.claims_table(claims[:1])})
    rows = [r for r in table.splitlines() if r.startswith("| g")]
    assert rows == [
        "| gupta2023 | X helps | weak shift | **reproduces** |",
        "| gupta2023 | Y | strong shift | **not resolved at this scale** |",
        "| guo2024 | X helps | weak shift | **reproduces** |",
    ]


def test_a_generated_section_replaces_only_itself(tmp_path: Path):
    doc = tmp_path / "REPRODUCTION.md"
    before = (
        "# Title\n\nprose\n\n<!-- reproduce:guo2024 -->\nold\n<!-- /reproduce:guo2024 -->\n\ntail\n"
    )
    doc.write_text(before)
    assert reports.update_doc(doc, "guo2024", "# Guo\n\n| a |\n")
    text = doc.read_text()
    assert text.startswith("# Title\n\nprose\n\n") and text.endswith("\n\ntail\n")
    assert "old" not in text and "### Guo" in text  # its heading two levels down
    assert (
        reports.update_doc(doc, "guo2024", "# Guo again\n") and "### Guo again" in doc.read_text()
    )
    assert not reports.update_doc(
        doc, "gupta2023", "# x\n"
    )  # no such section: the file is untouched
    assert "### Guo again" in doc.read_text()


def test_task_curves_join_the_curve_table_for_the_task_figure():
    from cpt.analysis.collect import curves_from_records

    records = [
        {"step": "0", "train/tokens": "0", "task/next_line_downstream/acc_norm": "0.40"},
        {"step": "5", "train/tokens": "10240", "task/next_line_downstream/acc_norm": "0.31"},
    ]
    rows = curves_from_records(records, "run")
    assert [(r["domain"], r["metric"], r["step"], r["value"]) for r in rows] == [
        ("next_line_downstream", "task_acc_norm", 0, 0.40),
        ("next_line_downstream", "task_acc_norm", 5, 0.31),
    ]


def test_figures_are_embedded_from_their_docs_copies(tmp_path: Path):
    figures = tmp_path / "figures"
    figures.mkdir()
    (figures / "guo2024_stability_gap.png").write_bytes(b"png")
    text = reports.embed_figures(
        "x\n\nFigures: stability_gap.png, missing.png\n", "guo2024", figures
    )
    assert "![guo2024 stability_gap.png](figures/guo2024_stability_gap.png)" in text
    assert "Figures: missing.png" in text and text.startswith("x\n\n")


def test_committed_figures_are_small():
    figures = sorted((Path(__file__).parents[1] / "docs" / "figures").glob("*.png"))
    for path in figures:
        assert path.stat().st_size < 200_000, path.name


def test_the_chained_runs_use_the_seeds_the_twins_sweep():
    import yaml

    from cpt.analysis.reproduce import SEEDS

    scale = yaml.safe_load((Path(__file__).parents[1] / "conf" / "scale" / "cpu.yaml").read_text())
    swept = [int(s) for s in str(scale["hydra"]["sweeper"]["params"]["seed"]).split(",")]
    assert list(SEEDS) == swept and len(swept) >= 3


def test_the_infinite_chain_is_judged_on_each_shift_apart():
    """Annealing helps downstream on the strong shift, hurts on the weak; task 2 on both."""
    rows = []
    values = {  # variant: {shift: (downstream, upstream, rise/downstream)}
        "task1_infinite": {"strong": (4.00, 4.5, 0.1), "weak": (3.50, 4.1, 0.1)},
        "task1_infinite_annealed": {"strong": (3.90, 4.5, 0.1), "weak": (3.60, 4.1, 0.1)},
        "task1_cosine": {"strong": (3.90, 4.5, 0.1), "weak": (3.50, 4.1, 0.1)},
        "task2_infinite_annealed": {"strong": (4.20, 4.0, 0.05), "weak": (3.70, 3.9, 0.05)},
        "task2_cosine": {"strong": (4.40, 4.0, 0.30), "weak": (3.90, 3.9, 0.30)},
    }
    for variant, by_shift in values.items():
        for shift, (down, up, rise) in by_shift.items():
            for seed, noise in enumerate((0.0, 0.002, -0.002)):
                rows.append(
                    {
                        "run": f"{variant}/{shift}/seed-{seed}",
                        "status": "finished",
                        "variant": variant,
                        "shift": shift,
                        "seed": seed,
                        COLUMN: down + noise,
                        "final/val/upstream/loss": up + noise,
                        "rise/downstream": rise + noise,
                    }
                )
    table = by_seed(pd.DataFrame(rows), ["variant", "shift", "seed"])
    claims = paper_claims.infinite_claims(table)
    assert [c.where for c in claims] == ["strong shift"] * 6 + ["weak shift"] * 6
    anneal = {c.where: c.verdict for c in claims if c.claim.startswith("Task 1: the anneal")}
    assert anneal == {"strong shift": v.REPRODUCES, "weak shift": v.FAILS}
    carried = [c.verdict for c in claims if c.claim.startswith("Task 2: carrying")]
    assert carried == [v.REPRODUCES, v.REPRODUCES]


def test_the_chained_runs_loop_over_the_configured_shifts():
    from cpt.analysis.reproduce import SHIFTS

    conf = Path(__file__).parents[1] / "conf" / "shift"
    assert sorted(SHIFTS) == sorted(p.stem for p in conf.glob("*.yaml"))
