"""The Llama family against transformers (Llama, Qwen 2), presets, import/export, a CPT run."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

from cpt.models import config_from_name, from_hf, to_hf
from cpt.models.hf import config_from_hf
from tests.helpers import random_llama

# Published parameter counts.
LLAMA_PARAMS = {
    "tinyllama-1.1b": 1_100_048_384,
    "open-llama-3b": 3_426_473_600,
    "llama-2-7b": 6_738_415_616,
    "llama-3-8b": 8_030_261_248,
    "llama-3.2-1b": 1_235_814_400,
    "qwen2.5-0.5b": 494_032_768,
}
LLAMA3_SCALING = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 32,
}


@pytest.mark.parametrize(
    ("kind", "tied", "scaling"),
    [
        ("llama", False, None),
        ("llama", True, None),
        ("llama", False, LLAMA3_SCALING),
        ("qwen2", True, None),
    ],
)
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_logits_match_transformers(tmp_path, kind, tied, scaling, attention):
    hf = random_llama(kind, tied, scaling)
    hf.save_pretrained(tmp_path)
    ours = from_hf(str(tmp_path), attention=attention).eval()
    assert not any(p.is_meta for p in ours.parameters()) and not ours.inv_freq.is_meta
    x = torch.randint(0, 97, (2, 100))  # beyond original_max_position_embeddings: scaling matters
    with torch.no_grad():
        err = (hf(x).logits - ours(x)).abs().max().item()
    assert err < 1e-4
    if tied:
        assert ours.lm_head.weight is ours.embed_tokens.weight


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_sharded_export_round_trip(tmp_path, kind):
    hf = random_llama(kind, tied=kind == "qwen2", seed=3)
    hf.save_pretrained(tmp_path / "in")
    ours = from_hf(str(tmp_path / "in")).eval()
    to_hf(ours, tmp_path / "out", max_shard_bytes=40_000)  # force several shards
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 2
    cls = transformers.Qwen2ForCausalLM if kind == "qwen2" else transformers.LlamaForCausalLM
    back = cls.from_pretrained(tmp_path / "out").eval()
    again = from_hf(str(tmp_path / "out")).eval()  # streamed shard by shard into a meta model
    x = torch.randint(0, 97, (1, 30))
    with torch.no_grad():
        assert (back(x).logits - ours(x)).abs().max().item() < 1e-5
        assert torch.equal(again(x), ours(x))


def test_hub_format_llama3_config_is_read():
    config = config_from_hf(
        {
            "model_type": "llama",
            "vocab_size": 128256,
            "hidden_size": 2048,
            "num_hidden_layers": 16,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "intermediate_size": 8192,
            "max_position_embeddings": 131072,
            "rms_norm_eps": 1e-5,
            "rope_theta": 500000.0,
            "rope_scaling": {
                "factor": 32.0,
                "high_freq_factor": 4.0,
                "low_freq_factor": 1.0,
                "original_max_position_embeddings": 8192,
                "rope_type": "llama3",
            },
            "tie_word_embeddings": True,
            "head_dim": 64,
        }
    )
    assert config == config_from_name("llama-3.2-1b")


@pytest.mark.parametrize("name", sorted(LLAMA_PARAMS))
def test_presets_match_published_counts(name):
    assert config_from_name(name).num_parameters() == LLAMA_PARAMS[name]
