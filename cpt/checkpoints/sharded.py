"""Sharded checkpoints: a folder per checkpoint, written by every rank, read at any world size.

Layout (`torch.distributed.checkpoint`, as Lightning's `ModelParallelStrategy` writes it):

    checkpoints/step0000006.ckpt/
        __0_0.distcp, __1_0.distcp, ...   each rank's shards of the weights and AdamW state
        .metadata                         which slice of which tensor lives in which file
        meta.pt                           the rest of the Lightning checkpoint (step, loops,
                                          hyperparameters, datamodule state, callbacks)

A folder is written under a temporary name and renamed into place once every rank has finished,
so a name ending in `.ckpt` always holds a complete checkpoint. `read` turns a folder into the
dict a single-file Lightning checkpoint holds, without a process group: that is how one process
resumes what several wrote, and how `init=ckpt:` and `cpt.export` read a folder.
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter
from torch.distributed.checkpoint.default_planner import _EmptyStateDictLoadPlanner
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

from cpt.models.hf import CheckpointError

META = "meta.pt"  # Lightning's name for the non-tensor part
TENSORS = ("state_dict", "optimizer_states")  # what lives in the shards


def is_sharded(path: str | Path) -> bool:
    return Path(path).is_dir()


def save(
    checkpoint: dict[str, Any],
    path: str | Path,
    *,
    rank: int,
    barrier: Callable[[], None],
    process_group: Any = None,
) -> None:
    """Write `checkpoint` (sharded `state_dict`, `optimizer_states` as the strategy collected
    them) to the folder `path`; every rank calls this. Atomic: a temporary folder, renamed."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)  # what a killed save left
        tmp.mkdir(parents=True)
    barrier()
    tensors = {"state_dict": checkpoint.pop("state_dict")}
    tensors.update(
        {f"optimizer_{i}": s for i, s in enumerate(checkpoint.pop("optimizer_states", []))}
    )
    dcp.save(tensors, storage_writer=FileSystemWriter(tmp), process_group=process_group)
    if rank == 0:
        with (tmp / META).open("wb") as handle:
            torch.save(checkpoint, handle)
            handle.flush()
            os.fsync(handle.fileno())
    barrier()
    if rank == 0:
        replace(tmp, path)
    barrier()


def replace(new: Path, path: Path) -> None:
    """Move the complete folder `new` to `path`, over a file, link or folder already there.

    A rename cannot replace a non-empty folder; the old one is renamed aside first (the two
    renames are the only moment `path` is missing) and deleted after.
    """
    old = path.with_name(f".{path.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        os.replace(path, old)
    os.replace(new, path)
    shutil.rmtree(old, ignore_errors=True)


def check_complete(path: str | Path) -> Any:
    """A folder every rank finished: `meta.pt`, `.metadata` and every shard it lists, whole.
    Returns the DCP metadata it read."""
    path = Path(path)
    if not (path / META).is_file() or not (path / ".metadata").is_file():
        raise CheckpointError(
            f"{path}: not a sharded checkpoint (expected {META} and .metadata, written by cpt.train)"
        )
    try:
        metadata = FileSystemReader(path).read_metadata()
    except Exception as err:
        raise CheckpointError(f"{path}: unreadable .metadata ({type(err).__name__})") from None
    needed: dict[str, int] = {}
    for info in metadata.storage_data.values():
        end = info.offset + info.length
        needed[info.relative_path] = max(needed.get(info.relative_path, 0), end)
    for name, size in sorted(needed.items()):
        shard = path / name
        if not shard.is_file():
            raise CheckpointError(
                f"{path}: shard {name} is missing (the checkpoint lists {len(needed)} shards: "
                f"{', '.join(sorted(needed))})"
            )
        if shard.stat().st_size < size:
            raise CheckpointError(
                f"{path}: shard {name} is truncated ({shard.stat().st_size} bytes, expected {size})"
            )
    return metadata


def read_meta(path: str | Path) -> dict[str, Any]:
    """The non-tensor part of a sharded checkpoint (cheap: no weights are read)."""
    return torch.load(Path(path) / META, map_location="cpu", weights_only=True)


def read(path: str | Path, parts: Iterable[str] = TENSORS) -> dict[str, Any]:
    """A sharded checkpoint as one process's full Lightning checkpoint dict (no process group).

    `parts`: which of `state_dict` and `optimizer_states` to read (weights only for `init=` and
    export; both to resume). Optimizer states come back keyed by parameter index, as
    `torch.optim.Optimizer.load_state_dict` expects.
    """
    path = Path(path)
    stored = check_complete(path).state_dict_metadata
    checkpoint = read_meta(path)
    parts = set(parts)
    tops = {key.split(".", 1)[0] for key in stored}
    keys = {k for k in tops if k == "state_dict" and "state_dict" in parts}
    keys |= {k for k in tops if k.startswith("optimizer_") and "optimizer_states" in parts}
    tensors: dict[str, Any] = {}
    if keys:  # into an empty dict, rebuilt from the metadata (as dcp_to_torch_save does)
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        _load_state_dict(
            tensors,
            storage_reader=FileSystemReader(path),
            planner=_EmptyStateDictLoadPlanner(keys=keys),
            no_dist=True,
        )
    if "state_dict" in tensors:
        checkpoint["state_dict"] = tensors["state_dict"]
    optimizers = sorted(
        (k for k in tensors if k.startswith("optimizer_")), key=lambda k: int(k.split("_")[1])
    )
    if optimizers:
        checkpoint["optimizer_states"] = [by_index(tensors[k]) for k in optimizers]
    return checkpoint


def by_index(state: dict[str, Any]) -> dict[str, Any]:
    """An optimizer state keyed by parameter name (`get_optimizer_state_dict`) re-keyed by
    position in the parameter groups, the form of `torch.optim.Optimizer.state_dict()`."""
    index: dict[str, int] = {}
    groups = []
    for group in state["param_groups"]:
        ids = [index.setdefault(name, len(index)) for name in group["params"]]
        groups.append({**group, "params": ids})
    return {
        "state": {index[k]: v for k, v in state.get("state", {}).items()},
        "param_groups": groups,
    }


def by_name(state: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """The inverse of `by_index`: an optimizer state keyed by position re-keyed by parameter
    name (`names` in the optimizer's order), the form `set_optimizer_state_dict` takes."""
    groups = [{**g, "params": [names[i] for i in g["params"]]} for g in state["param_groups"]]
    return {
        "state": {names[i]: v for i, v in state.get("state", {}).items()},
        "param_groups": groups,
    }


def load_optimizer_state(module: torch.nn.Module, optimizer: Any, state: dict[str, Any]) -> None:
    """A whole optimizer state (keyed by position, as in a `.ckpt` file) into `optimizer`; under
    FSDP each rank keeps its shards of the moments. `module` names the parameters."""
    from torch.distributed.tensor import DTensor

    if not any(isinstance(p, DTensor) for g in optimizer.param_groups for p in g["params"]):
        optimizer.load_state_dict(state)
        return
    # by name, in the optimizer's own order (its groups need not follow the module's order)
    names = {id(p): n for n, p in module.named_parameters()}
    order = [names[id(p)] for g in optimizer.param_groups for p in g["params"]]
    set_optimizer_state_dict(
        module,
        optimizer,
        optim_state_dict=by_name(state, order),
        options=StateDictOptions(full_state_dict=True),
    )


def load_whole(module: torch.nn.Module, optimizers: list[Any], path: Path) -> dict[str, Any]:
    """A single-file checkpoint into a sharded module and its optimizers (every rank reads the
    file, memory-mapped); returns the rest of the checkpoint for Lightning to restore."""
    checkpoint = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    set_model_state_dict(
        module, checkpoint.pop("state_dict"), options=StateDictOptions(full_state_dict=True)
    )
    for optimizer, state in zip(optimizers, checkpoint.pop("optimizer_states", [])):
        load_optimizer_state(module, optimizer, state)
    return checkpoint
