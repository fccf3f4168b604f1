"""A real multirun grid: joblib launcher, wandb offline per job, collection, and the notebooks."""

from __future__ import annotations

from pathlib import Path

import pytest

from cpt.analysis.collect import collect
from cpt.analysis.notebooks import NOTEBOOKS, execute

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("notebook", ["rewarming", "replay", "stability_gap"])
def test_notebooks_run_headless_on_the_table(sweep, notebook, tmp_path):
    collect(sweep)
    executed = execute(NOTEBOOKS / f"{notebook}.ipynb", sweep, out=tmp_path / f"{notebook}.ipynb")
    assert executed.is_file()
    figure = {
        "rewarming": "rewarming.png",
        "replay": "replay_frontier.png",
        "stability_gap": "stability_gap.png",
    }
    assert (sweep / figure[notebook]).stat().st_size > 5_000


def test_committed_notebooks_have_no_outputs():
    import nbformat

    for path in NOTEBOOKS.glob("*.ipynb"):
        nb = nbformat.read(str(path), as_version=4)
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), path
