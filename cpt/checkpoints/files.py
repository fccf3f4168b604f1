"""A run's checkpoints as files: read without unpickling arbitrary objects, written atomically.

A checkpoint is a Lightning `.ckpt` file or a sharded folder (`cpt.checkpoints.sharded`, written by
FSDP ranks); either is read whole in one process by `read_lightning_checkpoint`. Weights-only
starts (`init=`) and their checks live in `cpt.run.initial`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from cpt.checkpoints import sharded
from cpt.files import written_atomically
from cpt.models.hf import CheckpointError
from cpt.models.registry import ModelConfig, config_from_dict


def read_lightning_checkpoint(
    path: str | Path, parts: tuple[str, ...] = ("state_dict",)
) -> dict[str, Any]:
    """A Lightning checkpoint loaded without unpickling arbitrary objects: a file, or a sharded
    folder read whole in this process (`parts`: its tensors to read, `cpt.checkpoints.sharded.read`)."""
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


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file, flushed to disk, then renamed into place.

    A process killed at any moment leaves either the previous checkpoint or the new one, never a
    truncated file under a checkpoint's name.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None
    ) -> None:
        path = Path(path)
        folder = path.is_dir() and not path.is_symlink()  # a sharded run's folder of that name
        with (
            written_atomically(path, durable=True, move=sharded.replace if folder else None) as tmp,
            tmp.open("wb") as handle,
        ):
            torch.save(checkpoint, handle)

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
