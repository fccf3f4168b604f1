"""Verdicts follow from the seeds' intervals; generated sections replace only themselves."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cpt.reproduce import claims as paper_claims
from cpt.reproduce import reports
from cpt.reproduce import verdicts as v

COLUMN = "final/val/downstream/loss"


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
    figures = sorted((Path(__file__).parents[2] / "docs" / "figures").glob("*.png"))
    for path in figures:
        assert path.stat().st_size < 200_000, path.name


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
    claims = paper_claims.infinite_claims(pd.DataFrame(rows))  # the runs: paired by seed
    assert [c.where for c in claims] == ["strong shift"] * 6 + ["weak shift"] * 6
    anneal = {c.where: c.verdict for c in claims if c.claim.startswith("Task 1: the anneal")}
    assert anneal == {"strong shift": v.REPRODUCES, "weak shift": v.FAILS}
    carried = [c.verdict for c in claims if c.claim.startswith("Task 2: carrying")]
    assert carried == [v.REPRODUCES, v.REPRODUCES]


def test_a_paper_reproduced_alone_keeps_the_other_papers_rows_in_the_summary(tmp_path: Path):
    from cpt.reproduce.twins import reported_results

    claim = v.Claim("X helps", "weak shift", v.REPRODUCES, "1.0 vs 2.0")
    doc = tmp_path / "REPRODUCTION.md"
    doc.write_text(
        "intro\n<!-- reproduce:guo2024 -->\n### Guo\n\n"
        + v.claims_table([v.Claim("old Guo claim", "strong shift", v.FAILS, "n")])
        + "\n<!-- /reproduce:guo2024 -->\n<!-- reproduce:gupta2023 -->\nold\n"
        "<!-- /reproduce:gupta2023 -->\n"
    )
    (tmp_path / "out" / "gupta2023").mkdir(parents=True)
    (tmp_path / "out" / "gupta2023" / "results.md").write_text(v.claims_table([claim]))
    texts = reported_results(tmp_path / "out", doc)
    assert list(texts) == ["gupta2023", "guo2024"]  # no section, no results: left out
    rows = [r for r in reports.summary(texts).splitlines() if r.startswith("| g")]
    assert rows == [
        "| gupta2023 | X helps | weak shift | **reproduces** |",
        "| guo2024 | old Guo claim | strong shift | **does not reproduce** |",
    ]
    assert reports.doc_section(doc, "ibrahim2024_replay") is None


def test_a_sections_wall_time_names_the_processor_and_the_days(tmp_path: Path):
    (tmp_path / reports.WALL).write_text(
        '{"seconds": 3720.0, "processors": ["AMD EPYC (2 cores; avx2)"], "dates": ["2026-12-06"]}'
    )
    text = reports.write(tmp_path, "Twin", ["body"])
    assert text.rstrip().endswith(
        "the training took 62 min on AMD EPYC (2 cores; avx2), 2026-12-06."
    )
    assert (tmp_path / "results.md").read_text() == text
