"""`cpt.export`: the exported folder is complete for the ecosystem (weights, config, tokenizer and
the files that declare its special tokens)."""

from __future__ import annotations

import json

import pytest
import transformers

from cpt.data.hf_tokenizer import special_tokens
from cpt.data.tokenizer import load_tokenizer
from cpt.export import main


def test_an_export_loads_with_auto_classes_and_its_special_tokens_set(trained):
    """A GPT-NeoX/Pythia-style tokenizer: no start token; bos = eos = <|endoftext|>, as
    Pythia's own config has it; pad is its <|padding|>."""
    folder = trained["hf"]
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == (
        "<|endoftext|>",
        "<|endoftext|>",
        "<|padding|>",
    )
    ours = load_tokenizer(str(folder / "tokenizer.json"))
    text = "def main():\n    return 0\n"
    assert tokenizer(text)["input_ids"] == ours.encode(text).ids  # nothing added before
    assert tokenizer.decode(ours.encode(text).ids) == text
    generation = transformers.GenerationConfig.from_pretrained(folder)
    assert (generation.bos_token_id, generation.eos_token_id, generation.pad_token_id) == (0, 0, 1)
    mapping = json.loads((folder / "special_tokens_map.json").read_text())
    assert mapping == {
        "bos_token": "<|endoftext|>",
        "eos_token": "<|endoftext|>",
        "pad_token": "<|padding|>",
    }
    model = transformers.AutoModelForCausalLM.from_pretrained(folder)
    assert model.config.model_type == "gpt_neox"
    assert model.generate(**tokenizer("def", return_tensors="pt"), max_new_tokens=2).shape[1] >= 2


def test_pad_falls_back_to_eos_when_the_vocabulary_has_no_padding_token(tmp_path):
    from tests.helpers import SAMPLE_TEXTS, llama_style_tokenizer

    tokenizer = load_tokenizer(str(llama_style_tokenizer(tmp_path, SAMPLE_TEXTS, "llama2")))
    assert special_tokens(tokenizer) == {"bos": ("<s>", 0), "eos": ("</s>", 1), "pad": ("</s>", 1)}


def test_a_missing_tokenizer_is_one_line(trained, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([str(trained["ckpt"]), str(tmp_path / "out"), "--tokenizer", str(tmp_path / "x.json")])
    assert exit_.value.code == 2
    assert "x.json: no such file" in capsys.readouterr().err
