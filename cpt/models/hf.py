"""Bridge to Hugging Face checkpoints: `from_hf` reads one into our model, `to_hf` writes one.

The architecture always comes from the checkpoint's `config.json`, in either of the two formats
found in the wild: the hub's Pythia files (`rotary_pct`, `rotary_emb_base`) and what transformers 5
writes (`rope_parameters` with `partial_rotary_factor` and `rope_theta`). Weights are read from
safetensors when present, else from `.bin` files with `torch.load(weights_only=True)`, so a
checkpoint can never run code while loading.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from cpt.models.gpt_neox import GPTNeoX, GPTNeoXConfig

HF_PREFIX = "gpt_neox."
# Buffers that old checkpoints carry and that we recompute.
_IGNORED_SUFFIXES = ("attention.bias", "attention.masked_bias", "rotary_emb.inv_freq")
# transformers 5 names the output layer `lm_head` in memory; files usually say `embed_out`.
_HF_RENAMES = {"lm_head.weight": "embed_out.weight"}


class CheckpointError(ValueError):
    """A checkpoint that cannot be read as asked: missing files, another architecture, bad keys."""


def split_revision(spec: str) -> tuple[str, str | None]:
    """`EleutherAI/pythia-410m@step143000` -> (`EleutherAI/pythia-410m`, `step143000`)."""
    if "@" in spec:
        name, revision = spec.rsplit("@", 1)
        return name, revision or None
    return spec, None


def _looks_like_path(spec: str) -> bool:
    return spec.startswith((".", "/", "~")) or spec.count("/") != 1


def resolve_folder(spec: str, revision: str | None = None) -> Path:
    """A local checkpoint folder, downloading from the hub only when `spec` is a hub id."""
    name, rev = split_revision(spec)
    revision = revision or rev
    local = Path(name).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise CheckpointError(f"{local}: no config.json; expected a Hugging Face model folder")
        return local
    if _looks_like_path(name):
        raise CheckpointError(
            f"{name}: no such folder; expected a Hugging Face model folder or hub id"
        )
    from huggingface_hub import snapshot_download  # only when a config names a hub id

    patterns = ["*.json", "*.safetensors", "tokenizer*"]
    folder = Path(snapshot_download(name, revision=revision, allow_patterns=patterns))
    if not any(folder.glob("*.safetensors")):  # intermediate Pythia steps ship only .bin
        folder = Path(
            snapshot_download(name, revision=revision, allow_patterns=[*patterns, "*.bin"])
        )
    return folder


def config_from_hf(values: dict[str, Any], source: str = "config.json") -> GPTNeoXConfig:
    """Our config from a `config.json` dict, accepting both the hub's and transformers 5's keys."""
    model_type = values.get("model_type")
    if model_type != "gpt_neox":
        raise CheckpointError(
            f"{source}: model_type is {model_type!r}; expected 'gpt_neox' (Pythia / GPT-NeoX)"
        )
    rope = values.get("rope_parameters") or values.get("rope_scaling") or {}
    if rope.get("rope_type", "default") not in ("default", None):
        raise CheckpointError(f"{source}: rope_type {rope['rope_type']!r} is not supported")
    try:
        return GPTNeoXConfig(
            vocab_size=values["vocab_size"],
            hidden_size=values["hidden_size"],
            num_hidden_layers=values["num_hidden_layers"],
            num_attention_heads=values["num_attention_heads"],
            intermediate_size=values["intermediate_size"],
            max_position_embeddings=values.get("max_position_embeddings", 2048),
            rotary_pct=rope.get("partial_rotary_factor", values.get("rotary_pct", 0.25)),
            rotary_emb_base=float(rope.get("rope_theta", values.get("rotary_emb_base", 10000.0))),
            use_parallel_residual=values.get("use_parallel_residual", True),
            layer_norm_eps=values.get("layer_norm_eps", 1e-5),
            hidden_act=values.get("hidden_act", "gelu"),
            attention_bias=values.get("attention_bias", True),
            tie_word_embeddings=values.get("tie_word_embeddings", False),
            initializer_range=values.get("initializer_range", 0.02),
        )
    except KeyError as err:
        raise CheckpointError(f"{source}: missing key {err.args[0]!r}") from None
    except ValueError as err:
        raise CheckpointError(f"{source}: {err}") from None


def config_to_hf(config: GPTNeoXConfig) -> dict[str, Any]:
    """A `config.json` that transformers 4 (legacy keys) and 5 (`rope_parameters`) both read."""
    values = config.to_dict()
    values.update(
        architectures=["GPTNeoXForCausalLM"],
        model_type="gpt_neox",
        rope_parameters={
            "rope_type": "default",
            "rope_theta": config.rotary_emb_base,
            "partial_rotary_factor": config.rotary_pct,
        },
        bos_token_id=0,
        eos_token_id=0,
        torch_dtype="float32",
    )
    return values


def read_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint folder: safetensors first, then weights-only `.bin`."""
    for index_name, loader in (
        ("model.safetensors.index.json", _load_safetensors),
        ("pytorch_model.bin.index.json", _load_bin),
    ):
        index = folder / index_name
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            state: dict[str, torch.Tensor] = {}
            for shard in shards:
                state.update(loader(folder / shard))
            return state
    if (folder / "model.safetensors").is_file():
        return _load_safetensors(folder / "model.safetensors")
    if (folder / "pytorch_model.bin").is_file():
        return _load_bin(folder / "pytorch_model.bin")
    raise CheckpointError(
        f"{folder}: no weights found; expected model.safetensors, pytorch_model.bin or a shard index"
    )


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path), device="cpu")


def _load_bin(path: Path) -> dict[str, torch.Tensor]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # an unpickler refusal names the offending global
        raise CheckpointError(
            f"{path}: refused to load: not a plain tensor file ({err.__class__.__name__})"
        ) from None


def state_from_hf(state: dict[str, torch.Tensor], config: GPTNeoXConfig) -> dict[str, torch.Tensor]:
    """Rename HF keys to ours and drop the buffers old checkpoints carry."""
    ours = {
        _HF_RENAMES.get(key, key.removeprefix(HF_PREFIX)): tensor
        for key, tensor in state.items()
        if not key.endswith(_IGNORED_SUFFIXES)
    }
    if config.tie_word_embeddings and "embed_out.weight" not in ours and "embed_in.weight" in ours:
        ours["embed_out.weight"] = ours["embed_in.weight"]
    return ours


def load_weights(model: GPTNeoX, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy `state` (our names) into `model`: every parameter covered, nothing left over."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: weights do not match the architecture "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    for key, tensor in state.items():
        if tensor.shape != expected[key].shape:
            raise CheckpointError(
                f"{source}: {key} has shape {tuple(tensor.shape)}; "
                f"expected {tuple(expected[key].shape)}"
            )
    model.load_state_dict(state)


def from_hf(path_or_id: str, revision: str | None = None, attention: str = "sdpa") -> GPTNeoX:
    """Our model with the weights of a Hugging Face GPT-NeoX checkpoint (folder or hub id)."""
    folder = resolve_folder(path_or_id, revision)
    config = config_from_hf(json.loads((folder / "config.json").read_text()), str(folder))
    model = GPTNeoX(config, attention=attention)
    load_weights(model, state_from_hf(read_state_dict(folder), config), str(folder))
    return model


def to_hf(model: GPTNeoX, folder: str | Path, tokenizer_file: str | Path | None = None) -> Path:
    """Write `config.json` + `model.safetensors` (+ `tokenizer.json`) readable by transformers."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {}
    for key, tensor in model.state_dict().items():
        if model.config.tie_word_embeddings and key == "embed_out.weight":
            continue
        name = key if key == "embed_out.weight" else HF_PREFIX + key
        state[name] = tensor.detach().to("cpu").contiguous()
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config_to_hf(model.config), indent=2) + "\n")
    if tokenizer_file is not None:
        shutil.copyfile(tokenizer_file, folder / "tokenizer.json")
    return folder
