"""Corpora, tokenizer, token files and windows."""

from __future__ import annotations

import json

import pytest

from cpt.data.tokenizer import TokenizerError, eod_id, load_tokenizer, start_id
from tests.helpers import SAMPLE_TEXTS, llama_style_tokenizer


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


@pytest.mark.parametrize("style", ["llama3", "llama2"])
def test_a_llama_style_tokenizer_starts_every_text_as_transformers_does(style, tmp_path):
    """By its post-processor (Llama 3) or its tokenizer_config.json's add_bos_token (Llama 2);
    `transformers` on the same folder encodes the same ids."""
    from transformers import PreTrainedTokenizerFast

    path = llama_style_tokenizer(tmp_path, SAMPLE_TEXTS, style)
    tokenizer = load_tokenizer(str(path))
    start = start_id(tokenizer)
    assert tokenizer.id_to_token(start) == ("<|begin_of_text|>" if style == "llama3" else "<s>")
    config = (
        json.loads((tmp_path / "tokenizer_config.json").read_text()) if style == "llama2" else {}
    )
    reference = PreTrainedTokenizerFast(tokenizer_file=str(path), **config)
    for text in SAMPLE_TEXTS[:5]:
        ids = tokenizer.encode(text).ids
        assert ids[0] == start and ids[1:] == tokenizer.encode(text, add_special_tokens=False).ids
        assert ids == reference(text)["input_ids"]


def test_a_tokenizer_config_can_drop_the_start_token_and_must_name_a_known_one(tmp_path):
    path = llama_style_tokenizer(tmp_path, SAMPLE_TEXTS, "llama3")
    (tmp_path / "tokenizer_config.json").write_text('{"add_bos_token": false}')
    assert start_id(load_tokenizer(str(path))) is None
    (tmp_path / "tokenizer_config.json").write_text('{"add_bos_token": true, "bos_token": "<x>"}')
    assert start_id(load_tokenizer(str(path))) == 0  # already there: nothing to add
    two = llama_style_tokenizer(tmp_path / "two", SAMPLE_TEXTS, "llama2")
    (two.parent / "tokenizer_config.json").write_text('{"add_bos_token": true, "bos_token": "<x>"}')
    with pytest.raises(TokenizerError, match=r"bos_token '<x>' is not in the tokenizer"):
        load_tokenizer(str(two))
    (two.parent / "tokenizer_config.json").write_text("[1]")
    with pytest.raises(TokenizerError, match="expected a JSON object"):
        load_tokenizer(str(two))


def test_pythia_style_tokenizers_have_no_start_token(tokenizer):
    assert start_id(tokenizer) is None
