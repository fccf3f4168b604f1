"""The GPT-NeoX implementation against transformers, the preset table and the HF bridge."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
import transformers
from hypothesis import given, settings
from hypothesis import strategies as st

from cpt.models import CheckpointError, GPTNeoX, config_from_name, from_hf, preset_names, to_hf
from cpt.models.hf import config_from_hf
from cpt.models.registry import build_model

# Published parameter counts (total, without embeddings) of the Pythia suite.
PYTHIA_PARAMS = {
    "pythia-70m": (70_426_624, 18_915_328),
    "pythia-160m": (162_322_944, 85_056_000),
    "pythia-410m": (405_334_016, 302_311_424),
    "pythia-1b": (1_011_781_632, 805_736_448),
    "pythia-1.4b": (1_414_647_808, 1_208_602_624),
    "pythia-2.8b": (2_775_208_960, 2_517_652_480),
    "pythia-6.9b": (6_857_302_016, 6_444_163_072),
    "pythia-12b": (11_846_072_320, 11_327_027_200),
}


def random_hf(parallel: bool = True, rotary_pct: float = 0.25, seed: int = 0, **kw):
    torch.manual_seed(seed)
    config = transformers.GPTNeoXConfig(
        vocab_size=101,
        hidden_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=96,
        max_position_embeddings=64,
        rotary_pct=rotary_pct,
        use_parallel_residual=parallel,
        **kw,
    )
    model = transformers.GPTNeoXForCausalLM(config).eval()
    with torch.no_grad():  # HF's init leaves biases and norms trivial: make every weight count
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


@pytest.mark.parametrize("parallel", [True, False])
@pytest.mark.parametrize("rotary_pct", [0.25, 1.0])
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_logits_match_transformers(tmp_path, parallel, rotary_pct, attention):
    hf = random_hf(parallel, rotary_pct)
    hf.save_pretrained(tmp_path)
    ours = from_hf(str(tmp_path), attention=attention).eval()
    x = torch.randint(0, 101, (2, 40))
    with torch.no_grad():
        err = (hf(x).logits - ours(x)).abs().max().item()
    assert err < 1e-4


def test_export_round_trip(tmp_path):
    hf = random_hf(parallel=False, rotary_pct=0.5, seed=1)
    hf.save_pretrained(tmp_path / "in")
    ours = from_hf(str(tmp_path / "in")).eval()
    to_hf(ours, tmp_path / "out")
    back = transformers.GPTNeoXForCausalLM.from_pretrained(tmp_path / "out").eval()
    again = from_hf(str(tmp_path / "out")).eval()
    x = torch.randint(0, 101, (1, 24))
    with torch.no_grad():
        assert (back(x).logits - ours(x)).abs().max().item() < 1e-5
        assert torch.equal(again(x), ours(x))
    assert back.config.rope_parameters["partial_rotary_factor"] == 0.5


def test_hub_format_config_and_bin_weights(tmp_path):
    """Intermediate Pythia steps on the hub: legacy rope keys, weights only in pytorch_model.bin."""
    hf = random_hf(rotary_pct=0.25, seed=2)
    state = {"gpt_neox." + k: v for k, v in hf.gpt_neox.state_dict().items()}
    head = getattr(hf, "lm_head", None) or hf.embed_out  # transformers 5 / 4 attribute names
    state["embed_out.weight"] = head.weight.detach().clone()
    state["gpt_neox.layers.0.attention.bias"] = torch.ones(1, 1, 64, 64, dtype=torch.bool)
    torch.save(state, tmp_path / "pytorch_model.bin")
    config = {
        "model_type": "gpt_neox",
        "architectures": ["GPTNeoXForCausalLM"],
        "vocab_size": 101,
        "hidden_size": 64,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "intermediate_size": 96,
        "max_position_embeddings": 64,
        "rotary_pct": 0.25,
        "rotary_emb_base": 10000,
        "use_parallel_residual": True,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-5,
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    ours = from_hf(str(tmp_path)).eval()
    x = torch.randint(0, 101, (2, 16))
    with torch.no_grad():
        assert (hf(x).logits - ours(x)).abs().max().item() < 1e-4


def test_transformers5_config_keys_are_read():
    config = config_from_hf(
        {
            "model_type": "gpt_neox",
            "vocab_size": 50304,
            "hidden_size": 512,
            "num_hidden_layers": 6,
            "num_attention_heads": 8,
            "intermediate_size": 2048,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 500.0,
                "partial_rotary_factor": 0.5,
            },
            "attention_bias": False,
        }
    )
    assert (config.rotary_pct, config.rotary_emb_base, config.attention_bias) == (0.5, 500.0, False)


class _Payload:
    def __reduce__(self):
        return (print, ("this ran while loading",))


def test_pickle_with_code_is_refused(tmp_path, capfd):
    hf = random_hf()
    hf.config.save_pretrained(tmp_path)
    with open(tmp_path / "pytorch_model.bin", "wb") as handle:
        pickle.dump({"x": _Payload()}, handle)
    with pytest.raises(CheckpointError, match="refused to load"):
        from_hf(str(tmp_path))
    assert "this ran while loading" not in capfd.readouterr().out


def test_other_architecture_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(CheckpointError, match="expected 'gpt_neox'"):
        from_hf(str(tmp_path))


def test_missing_folder_is_reported():
    with pytest.raises(CheckpointError, match="no such folder"):
        from_hf("./does/not/exist")


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_causality(attention):
    torch.manual_seed(0)
    model = GPTNeoX(config_from_name("tiny"), attention=attention).eval()
    x = torch.randint(0, 4096, (1, 20))
    y = x.clone()
    y[0, 12:] = torch.randint(0, 4096, (8,))
    with torch.no_grad():
        a, b = model(x), model(y)
    assert torch.allclose(a[0, :12], b[0, :12], atol=1e-6)
    assert not torch.allclose(a[0, 12:], b[0, 12:])


@settings(max_examples=15, deadline=None)
@given(
    family=st.sampled_from(["tiny", "tiny-llama"]),
    mask=st.lists(st.lists(st.booleans(), min_size=9, max_size=9), min_size=1, max_size=3),
)
def test_logits_at_are_the_full_logits_at_those_positions(family, mask):
    """What the task scorer asks for (`logits_at`): the rows of the whole batch's logits, in
    row-major order, for any set of positions."""
    torch.manual_seed(0)
    model = build_model(config_from_name(family)).eval()
    at = torch.tensor(mask)
    x = torch.randint(0, model.config.vocab_size, at.shape)
    with torch.no_grad():
        assert torch.allclose(model(x, logits_at=at), model(x)[at], atol=1e-5)


@pytest.mark.parametrize("name", sorted(PYTHIA_PARAMS))
def test_presets_match_published_pythia(name):
    config = config_from_name(name)
    assert (config.num_parameters(), config.num_parameters(embeddings=False)) == PYTHIA_PARAMS[name]
    assert (config.rotary_pct, config.max_position_embeddings, config.use_parallel_residual) == (
        0.25,
        2048,
        True,
    )


def test_parameter_count_formula_matches_a_built_model():
    for name in ("tiny", "pythia-14m"):
        model = GPTNeoX(config_from_name(name))
        assert sum(p.numel() for p in model.parameters()) == config_from_name(name).num_parameters()


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_is_a_model_option(name):
    """`model=<preset>` comes from the preset table itself: no file to keep in sync by hand."""
    from tests.conftest import CONF, compose_train

    assert not (CONF / "model" / f"{name}.yaml").exists()
    assert compose_train([f"model={name}", "output_dir=/tmp/x"]).model.name == name
