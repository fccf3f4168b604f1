"""Where a run's model comes from: `init=scratch | hf:<id or folder>[@rev] | ckpt:<file or folder>`.

`init` loads weights only (the start of continual pre-training: fresh optimizer, step 0); `resume`
restores a whole training state through Lightning and is handled by the trainer. A preset named
beside a checkpoint, and a checkpoint to resume, are checked against the model this run builds.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cpt.checkpoints.files import checkpoint_config, model_state, read_lightning_checkpoint
from cpt.models.hf import (
    CheckpointError,
    config_from_hf,
    load_hf_streaming,
    load_weights,
    resolve_folder,
    split_revision,
)
from cpt.models.presets import config_from_name
from cpt.models.registry import ModelConfig, build_model


@dataclass
class InitialModel:
    config: ModelConfig
    source: str
    folder: Path | None = None  # a Hugging Face folder, streamed shard by shard into the model
    state: dict[str, torch.Tensor] | None = None  # our names (memory-mapped from a .ckpt)
    data_state: dict[str, Any] | None = None  # a cpt checkpoint's datamodule state (its splits)


def differences(expected: ModelConfig, found: ModelConfig) -> list[str]:
    """The fields that change the network's function (all but the initialisation scale)."""
    if expected.family != found.family:
        return [f"family {expected.family} != {found.family}"]
    names = [f.name for f in fields(expected) if f.name not in ("initializer_range", "model_type")]
    return [
        f"{name} {getattr(expected, name)} != {getattr(found, name)}"
        for name in names
        if getattr(expected, name) != getattr(found, name)
    ]


def check_agreement(preset: str, expected: ModelConfig, found: ModelConfig, source: str) -> None:
    """A preset named beside a checkpoint must describe the same network."""
    if expected.family != found.family:
        raise CheckpointError(
            f"model.name={preset} is a {expected.family} model but {source} holds a {found.family} one"
        )
    diffs = differences(expected, found)
    if diffs:
        raise CheckpointError(
            f"model.name={preset} disagrees with {source}: {', '.join(diffs[:4])}; "
            "set model.name=null to take the checkpoint's architecture"
        )


def check_resumable(path: str, expected: ModelConfig) -> None:
    """A checkpoint to resume: complete (every shard of a folder) and of the model this run
    builds; checked before anything is written."""
    meta = read_lightning_checkpoint(path, ())  # a folder: checked complete, no tensors read
    diffs = differences(expected, checkpoint_config(meta, path))
    if diffs:
        raise CheckpointError(
            f"{path} holds another model ({', '.join(diffs[:4])}); expected a checkpoint of the "
            "model this run builds (model=..., init=...)"
        )


def folder_config(folder: Path) -> ModelConfig:
    """The architecture a Hugging Face model folder's `config.json` describes."""
    return config_from_hf(json.loads((folder / "config.json").read_text()), str(folder))


def initial_model(init: str, preset: str | None) -> InitialModel:
    """Architecture and starting weights for `init`, checked against `preset` when both exist."""
    if init == "scratch":
        if preset is None:
            raise CheckpointError("init=scratch needs a model preset (model.name)")
        return InitialModel(config_from_name(preset), "scratch")
    if init.startswith("hf:"):
        folder = resolve_folder(init.removeprefix("hf:"))
        found = InitialModel(folder_config(folder), str(folder), folder=folder)
    elif init.startswith("ckpt:"):
        path = init.removeprefix("ckpt:")
        checkpoint = read_lightning_checkpoint(path)
        state = model_state(checkpoint, path)
        found = InitialModel(
            checkpoint_config(checkpoint, path),
            path,
            state=state,
            data_state=checkpoint.get("CPTDataModule"),
        )
    else:
        raise CheckpointError(
            f"init={init!r} not understood; expected scratch, hf:<id or folder> or ckpt:<file>"
        )
    if preset is not None:
        check_agreement(preset, config_from_name(preset), found.config, found.source)
    return found


def architecture(init: str, preset: str | None) -> InitialModel:
    """The starting model's architecture without its weights or any download (for a plan).

    A named preset is taken as is (the run checks it against the checkpoint); otherwise a `ckpt:`
    file's recorded architecture, or a local Hugging Face folder's `config.json`.
    """
    if preset is not None:
        return InitialModel(config_from_name(preset), init)
    if init.startswith("ckpt:"):
        path = init.removeprefix("ckpt:")
        return InitialModel(checkpoint_config(read_lightning_checkpoint(path, ()), path), path)
    folder = Path(split_revision(init.removeprefix("hf:"))[0]).expanduser()
    if init.startswith("hf:") and (folder / "config.json").is_file():
        return InitialModel(folder_config(folder), str(folder))
    raise CheckpointError(
        f"model.name: {init} names a hub model and no preset; a plan downloads nothing: "
        "name the preset (e.g. model=pythia-410m) or a local folder"
    )


def load_into(model: nn.Module, initial: InitialModel) -> None:
    """Copy the starting weights into `model` (nothing to do for a scratch start)."""
    if initial.folder is not None:
        load_hf_streaming(model, initial.folder, initial.source)
    elif initial.state is not None:
        load_weights(model, initial.state, initial.source)


@contextlib.contextmanager
def reference_scorer(reference: str, trained: nn.Module) -> Iterator[Any]:
    """`score(batch) -> per-window losses` of a reference model for quality selection.

    `init` scores with the run's own starting model (`trained`, before any step); `ckpt:`/`hf:`
    loads another. Scoring runs on a GPU when there is one; the trained model goes back to where
    the trainer put it.
    """
    model = trained
    if reference != "init":
        initial = initial_model(reference, None)
        model = build_model(initial.config)
        model.set_loss("chunked")  # no [tokens, vocab] logits per scored batch
        load_into(model, initial)
    home = next(model.parameters()).device
    device = home
    if home.type == "cpu" and torch.cuda.is_available():
        device = torch.device("cuda", torch.cuda.current_device())
    model.to(device)
    try:
        yield lambda batch: model.window_losses(**batch)
    finally:
        model.to(home)
