"""The data tests' tokenizers: one on prose, one on a few sample documents."""

from __future__ import annotations

import pytest

from cpt.data.sources import SourceSpec, documents
from cpt.data.tokenizer import train_bpe
from tests.helpers import SAMPLE_TEXTS


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory):
    texts = list(documents(SourceSpec("python-docs"), max_docs=60))
    return train_bpe(texts, 400, tmp_path_factory.mktemp("tok") / "tokenizer.json")


@pytest.fixture(scope="session")
def small_tokenizer(tmp_path_factory):
    return train_bpe(SAMPLE_TEXTS * 3, 300, tmp_path_factory.mktemp("tok") / "t.json")
