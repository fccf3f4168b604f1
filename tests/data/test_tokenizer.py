"""Corpora, tokenizer, token files and windows."""

from __future__ import annotations

import pytest

from cpt.data.tokenizer import TokenizerError, eod_id, load_tokenizer


def test_tokenizer_loading_errors(tmp_path):
    with pytest.raises(TokenizerError, match="no such file"):
        load_tokenizer(str(tmp_path / "missing.json"))
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(TokenizerError, match="not a tokenizer.json"):
        load_tokenizer(str(tmp_path / "bad.json"))


def test_trained_tokenizer_round_trips_text(tokenizer, tmp_path):
    text = "Return a list of the words in the string, using sep as the delimiter."
    assert tokenizer.decode(tokenizer.encode(text).ids) == text
    assert eod_id(tokenizer) == 0 and tokenizer.get_vocab_size() <= 400
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    loaded = load_tokenizer(str(tmp_path))  # a folder holding tokenizer.json
    assert loaded.encode(text).ids == tokenizer.encode(text).ids
