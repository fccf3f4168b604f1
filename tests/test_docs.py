"""The README and docs/ name files, keys and links that exist: a rename breaks this test."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import compose_train

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
PATH = re.compile(
    r"`((?:cpt|conf|scripts|notebooks|docs|tests)/[\w./-]+\.(?:py|yaml|ipynb|md|sh))`"
)


def test_readme_is_a_guide():
    assert len((REPO / "README.md").read_text().splitlines()) <= 300


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_named_file_exists(doc):
    missing = [p for p in PATH.findall(doc.read_text()) if not (REPO / p).exists()]
    assert missing == []


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_relative_link_resolves(doc):
    links = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", doc.read_text())
    assert [link for link in links if not (doc.parent / link).exists()] == []


def test_the_concept_map_keys_compose(tmp_path):
    """Every `group=option` the README's concept map names is a real config option."""
    text = (REPO / "README.md").read_text()
    table = text[text.index("## The papers' concepts") : text.index("## The papers' recipes")]
    choices = set(re.findall(r"`((?:schedule|callbacks|mitigation)=[a-z_]+)", table))
    assert len(choices) >= 6
    for choice in choices:
        prefix = "+" if choice.startswith("mitigation") else ""
        compose_train([prefix + choice, f"output_dir={tmp_path}"])


def _train_commands() -> list[tuple[str, list[str]]]:
    """Every `python -m cpt.train ...` line of a bash block in the README and docs/ (continued
    lines joined, comments dropped): (where, its overrides)."""
    import shlex

    found = []
    for doc in DOCS:
        for block in re.findall(r"```bash\n(.*?)```", doc.read_text(), flags=re.S):
            joined = re.sub(r"\\\n\s*", " ", block)
            for line in joined.splitlines():
                line = line.split(" #", 1)[0].strip()
                if line.startswith("python -m cpt.train ") and "..." not in line.split("#")[0]:
                    line = re.sub(r"<[^>]*>", "placeholder", line)  # the reader's to fill in
                    args = shlex.split(line)[3:]
                    found.append((f"{doc.name}: {line[:60]}", args))
    return found


@pytest.mark.parametrize(("where", "args"), _train_commands(), ids=lambda x: str(x)[:70])
def test_every_documented_training_command_composes(where, args, tmp_path):
    """The README's and the docs' `python -m cpt.train` examples compose as Hydra reads them
    (a documented `+data.domains.<new>.source=` once could not)."""
    from cpt.plan import jobs

    if any(a.startswith("hydra.searchpath=") for a in args):
        pytest.skip("names a user's own config folder")
    for job in jobs(args):  # a -m grid: each of its runs, as Hydra's basic sweeper expands it
        compose_train([*job, f"output_dir={tmp_path}"])
