"""Where a run's model comes from: `init=scratch | hf:<id or folder>[@rev] | ckpt:<file or folder>`.

`init` loads weights only (the start of continual pre-training: fresh optimizer, step 0); `resume`
restores a whole training state through Lightning and is handled by the trainer.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch import nn

from cpt import sharded
from cpt.models.hf import (
    CheckpointError,
    config_from_hf,
    load_hf_streaming,
    load_weights,
    resolve_folder,
    split_revision,
)
from cpt.models.presets import config_from_name
from cpt.models.registry import ModelConfig, build_model, config_from_dict


@dataclass
class InitialModel:
    config: ModelConfig
    source: str
    folder: Path | None = None  # a Hugging Face folder, streamed shard by shard into the model
    state: dict[str, torch.Tensor] | None = None  # our names (memory-mapped from a .ckpt)
    data_state: dict[str, Any] | None = None  # a cpt checkpoint's datamodule state (its splits)


def read_lightning_checkpoint(
    path: str | Path, parts: tuple[str, ...] = ("state_dict",)
) -> dict[str, Any]:
    """A Lightning checkpoint loaded without unpickling arbitrary objects: a file, or a sharded
    folder read whole in this process (`parts`: its tensors to read, `cpt.sharded.read`)."""
    path = Path(path).expanduser()
    if sharded.is_sharded(path):
        try:
            return sharded.read(path, parts)
        except CheckpointError:
            raise
        except Exception as err:
            raise CheckpointError(
                f"{path}: not a loadable sharded checkpoint ({type(err).__name__}: "
                f"{str(err).splitlines()[0] if str(err) else ''})"
            ) from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint file or folder") from None
    except Exception as err:
        raise CheckpointError(
            f"{path}: not a loadable checkpoint ({err.__class__.__name__}: {str(err).splitlines()[0]})"
        ) from None


def model_state(checkpoint: dict[str, Any], source: str) -> dict[str, torch.Tensor]:
    """The LM's weights from a Lightning checkpoint of `CPTModule`."""
    state = checkpoint.get("state_dict")
    if not isinstance(state, dict):
        raise CheckpointError(
            f"{source}: no state_dict; expected a checkpoint written by cpt.train"
        )
    return {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}


def checkpoint_config(checkpoint: dict[str, Any], source: str) -> ModelConfig:
    try:
        return config_from_dict(checkpoint["hyper_parameters"]["arch"])
    except (KeyError, TypeError):
        raise CheckpointError(
            f"{source}: no architecture in hyper_parameters; expected a cpt.train checkpoint"
        ) from None


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


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file, flushed to disk, then renamed into place.

    A process killed at any moment leaves either the previous checkpoint or the new one, never a
    truncated file under a checkpoint's name.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None
    ) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        with tmp.open("wb") as handle:
            torch.save(checkpoint, handle)
            handle.flush()
            os.fsync(handle.fileno())
        if path.is_dir() and not path.is_symlink():  # a sharded run's folder of that name
            sharded.replace(tmp, path)
        else:
            os.replace(tmp, path)

    def load_checkpoint(self, path: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """A file as Lightning reads it, or a sharded folder gathered whole: a run on one device
        or under DDP resumes what FSDP ranks wrote."""
        if sharded.is_sharded(path):
            return read_lightning_checkpoint(path, sharded.TENSORS)
        return super().load_checkpoint(path, *args, **kwargs)


def datamodule_state(path: str) -> dict[str, Any]:
    """What a `seen_by` replay needs from an earlier run: its datamodule state (draws, weights)."""
    state = read_lightning_checkpoint(path, ()).get("CPTDataModule")
    if not state:
        raise CheckpointError(f"{path}: no datamodule state; expected a checkpoint of cpt.train")
    return state


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
