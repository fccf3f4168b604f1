"""Bridge to Hugging Face checkpoints: `from_hf` reads one into our model, `to_hf` writes one.

The architecture always comes from the checkpoint's `config.json` (GPT-NeoX/Pythia or the Llama
family), in either of the formats found in the wild: the hub's files (`rotary_pct`,
`rotary_emb_base`; `rope_theta`, `rope_scaling`) and what transformers 5 writes (`rope_parameters`).
Weights are read from safetensors when present, else from `.bin` files with
`torch.load(weights_only=True)`, so a checkpoint can never run code while loading. They are
streamed shard by shard into a model built on the meta device: loading needs the model's size in
memory, not twice that.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from cpt.errors import UserError
from cpt.models.gpt_neox import GPTNeoXConfig
from cpt.models.hf_llama import MODEL_TYPES as LLAMA_TYPES
from cpt.models.hf_llama import llama_config_from_hf, llama_config_to_hf
from cpt.models.registry import ModelConfig, build_model

# Buffers that old checkpoints carry and that we recompute.
_IGNORED_SUFFIXES = ("attention.bias", "attention.masked_bias", "rotary_emb.inv_freq")
# family -> (prefix of the body in HF names, our output layer, HF's output layer, our input embedding)
_NAMES = {
    "gpt_neox": ("gpt_neox.", "embed_out.weight", "embed_out.weight", "embed_in.weight"),
    "llama": ("model.", "lm_head.weight", "lm_head.weight", "embed_tokens.weight"),
}
MAX_SHARD_BYTES = 5 * 1024**3


class CheckpointError(UserError, ValueError):
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


def config_from_hf(values: dict[str, Any], source: str = "config.json") -> ModelConfig:  # noqa: C901
    """Our config from a `config.json` dict, accepting both the hub's and transformers 5's keys."""
    model_type = values.get("model_type")
    if model_type in LLAMA_TYPES:
        try:
            return llama_config_from_hf(values)
        except KeyError as err:
            raise CheckpointError(f"{source}: missing key {err.args[0]!r}") from None
        except ValueError as err:
            raise CheckpointError(f"{source}: {err}") from None
    if model_type != "gpt_neox":
        raise CheckpointError(
            f"{source}: model_type is {model_type!r}; expected 'gpt_neox' (Pythia / GPT-NeoX) "
            f"or one of {list(LLAMA_TYPES)}"
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


def config_to_hf(config: ModelConfig) -> dict[str, Any]:
    """A `config.json` that transformers 4 (legacy keys) and 5 (`rope_parameters`) both read."""
    if config.family == "llama":
        return llama_config_to_hf(config)
    values = {k: v for k, v in config.to_dict().items() if k != "family"}
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


def weight_files(folder: Path) -> list[Path]:
    """The weight files of a checkpoint folder, safetensors first, shards in index order."""
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = folder / index_name
        if index.is_file():
            shards = json.loads(index.read_text())["weight_map"].values()
            return [folder / name for name in dict.fromkeys(shards)]
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return [folder / name]
    raise CheckpointError(
        f"{folder}: no weights found; expected model.safetensors, pytorch_model.bin or a shard index"
    )


def iter_shards(folder: Path) -> Iterator[dict[str, torch.Tensor]]:
    """The checkpoint's tensors, one weight file at a time."""
    for path in weight_files(folder):
        yield _load_safetensors(path) if path.suffix == ".safetensors" else _load_bin(path)


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path), device="cpu")


def _load_bin(path: Path) -> dict[str, torch.Tensor]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # an unpickler refusal names the offending global
        raise CheckpointError(
            f"{path}: refused to load: not a plain tensor file ({err.__class__.__name__})"
        ) from None


def state_from_hf(state: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """Rename HF keys to ours and drop the buffers old checkpoints carry."""
    prefix, our_head, _, embedding = _NAMES[config.family]
    ours = {}
    for key, tensor in state.items():
        if key.endswith(_IGNORED_SUFFIXES):
            continue
        ours[our_head if key == "lm_head.weight" else key.removeprefix(prefix)] = tensor
    if config.tie_word_embeddings:
        ours.pop(our_head, None)  # tied: the output layer is the input embedding
    return ours


def _expected(model: nn.Module) -> dict[str, torch.Size]:
    """Parameter and persistent-buffer shapes, tied parameters once (under their first name)."""
    return {
        k: v.shape
        for k, v in model.state_dict(keep_vars=True).items()
        if not _is_tied_head(model, k)
    }


def _is_tied_head(model: nn.Module, key: str) -> bool:
    config = getattr(model, "config", None)
    return bool(config and config.tie_word_embeddings and key == _NAMES[config.family][1])


def _check(
    model: nn.Module, state: dict[str, torch.Tensor], source: str, partial: bool = False
) -> None:
    expected = _expected(model)
    unexpected = sorted(set(state) - set(expected))
    missing = [] if partial else sorted(set(expected) - set(state))
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: weights do not match the architecture "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    for key, tensor in state.items():
        if tensor.shape != expected[key]:
            raise CheckpointError(
                f"{source}: {key} has shape {tuple(tensor.shape)}; expected {tuple(expected[key])}"
            )


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy `state` (our names) into `model`: every parameter covered, nothing left over."""
    state = {k: v for k, v in state.items() if not _is_tied_head(model, k)}
    _check(model, state, source)
    model.load_state_dict(state, strict=False)


def load_hf_streaming(model: nn.Module, folder: Path, source: str) -> None:
    """Load a checkpoint one weight file at a time (into a meta-device model: by assignment)."""
    config = model.config
    on_meta = any(p.is_meta for p in model.parameters())
    covered: set[str] = set()
    for shard in iter_shards(folder):
        part = state_from_hf(shard, config)
        _check(model, part, source, partial=True)
        model.load_state_dict(part, strict=False, assign=on_meta)
        covered |= set(part)
        del shard, part
    missing = sorted(set(_expected(model)) - covered)
    if missing:
        raise CheckpointError(
            f"{source}: weights do not match the architecture (missing {missing[:3]})"
        )
    model.tie_and_materialize()


def from_hf(path_or_id: str, revision: str | None = None, attention: str = "sdpa") -> nn.Module:
    """Our model with the weights of a Hugging Face checkpoint (a folder or a hub id)."""
    folder = resolve_folder(path_or_id, revision)
    config = config_from_hf(json.loads((folder / "config.json").read_text()), str(folder))
    with torch.device("meta"):
        model = build_model(config, attention)
    load_hf_streaming(model, folder, str(folder))
    return model


def to_hf(model: nn.Module, folder: str | Path, max_shard_bytes: int = MAX_SHARD_BYTES) -> Path:
    """Write `config.json` and the weights (sharded with an index beyond `max_shard_bytes`), as
    transformers reads them; `cpt.export` adds the tokenizer's files."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    prefix, our_head, hf_head, _ = _NAMES[model.config.family]
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, tensor in model.state_dict().items():
        if _is_tied_head(model, key):
            continue
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][hf_head if key == our_head else prefix + key] = (
            tensor.detach().to("cpu").contiguous()
        )
        size += nbytes
    if len(shards) == 1:
        save_file(shards[0], str(folder / "model.safetensors"), metadata={"format": "pt"})
    else:
        weight_map = {}
        for i, shard in enumerate(shards, 1):
            name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, str(folder / name), metadata={"format": "pt"})
            weight_map.update(dict.fromkeys(shard, name))
        total = sum(t.numel() * t.element_size() for shard in shards for t in shard.values())
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    (folder / "config.json").write_text(json.dumps(config_to_hf(model.config), indent=2) + "\n")
    return folder
