"""Corpora, tokenizer, token files and windows."""

from __future__ import annotations

from cpt.data.corpora import python_code
from cpt.data.sources import SourceSpec, documents


def test_builtin_corpora_are_prose_and_code():
    docs = list(documents(SourceSpec("python-docs"), max_docs=100))
    code = list(documents(SourceSpec("python-code"), max_docs=100))
    assert len(docs) == len(code) == 100
    assert any("def " in c for c in code) and not any(d.lstrip().startswith("def ") for d in docs)
    # the docstrings are the prose domain: blanked out of the code domain
    dedent_doc = "Remove any common leading whitespace from every line"
    assert any(dedent_doc in d for d in documents(SourceSpec("python-docs")))
    assert not any(dedent_doc in c for c in python_code())


def test_package_docs_is_other_prose_from_the_installed_packages():
    """The weak shift's corpora: the same kind of text as python-docs from other modules."""
    from cpt.data.corpora import PACKAGES, package_files, stdlib_files

    files = package_files()
    assert not {"tests", "testing", "_vendor"} & {part for f in files for part in f.parts}
    assert not set(files) & set(stdlib_files())
    docs = list(documents(SourceSpec("package-docs"), max_docs=200))
    assert len(docs) == 200 and not any(d.lstrip().startswith(("def ", "import ")) for d in docs)
    heads = {d.split(".", 1)[0].split("\n", 1)[0] for d in docs}
    assert heads <= set(PACKAGES) and "torch" in heads  # each document: one module's docstrings
    assert any("tensor" in d.lower() for d in docs)
