"""`StartMeasurements`: what a run measures at step 0, shared by the runs that start alike.

Every run of a grid that continues one checkpoint measures the same model at step 0: the
validation before training, the stability-gap monitor's first point and the tasks' first scores.
With `share_start_measurements: true` (one process), the first run to measure writes each result
to `<data.dir>/start-measurements/<kind>-<key>.json` and every later run reads it: the same numbers
bit for bit, logged as if measured (the twins' grids save about 4 s of a 61 s run).

The key hashes everything that decides a result: the weights' bytes as the run starts, cpt's
source and the versions of torch, Lightning, lm-eval and tokenizers, the model's options, the
precision, the device (its model; on a CPU its vector instructions) and the threads, the data
(config, tokenizer, prepared datasets) and what the kind measures (the monitor's batches; the
tasks, their limit, batch size and task files). Nothing else enters: the seed, the learning rate,
the schedule and the number of steps decide nothing at step 0. A file that cannot be read is
measured again and replaced.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cpt.files import write_text_atomic

log = logging.getLogger(__name__)

PACKAGES = ("torch", "lightning", "lm_eval", "tokenizers")


def folder_of(data_dir: str | Path) -> Path:
    """Where the runs that share a data folder share their step-0 measurements."""
    return Path(data_dir).expanduser() / "start-measurements"


def check_folder(folder: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise ValueError(
            f"share_start_measurements: {folder} is a file; expected a folder for the shared "
            "step-0 measurements (move the file away, or share_start_measurements=false)"
        )


class StartMeasurements:
    def __init__(self, folder: Path, identity: dict[str, Any]) -> None:
        self.folder = Path(folder)
        check_folder(self.folder)
        self.identity = _digest(identity)
        self.read: list[str] = []  # the kinds this run took from an earlier run
        self.written: list[str] = []

    @classmethod
    def of_run(cls, folder: Path, model: nn.Module, identity: dict[str, Any]) -> StartMeasurements:
        """For a run whose model holds its starting weights (before any step)."""
        return cls(folder, {**identity, "weights": weights_digest(model), "code": code_digest()})

    def path(self, kind: str, detail: dict[str, Any]) -> Path:
        key = _digest({"identity": self.identity, "kind": kind, "detail": detail})
        return self.folder / f"{kind}-{key[:40]}.json"

    def get(self, kind: str, detail: dict[str, Any]) -> Any | None:
        """The value an earlier run measured, or None (then measure and `put`)."""
        path = self.path(kind, detail)
        try:
            value = json.loads(path.read_text())["value"]
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.warning("%s: unreadable (%s); measuring again", path, err)
            return None
        self.read.append(kind)
        return value

    def put(self, kind: str, detail: dict[str, Any], value: Any) -> None:
        path = self.path(kind, detail)
        path.parent.mkdir(parents=True, exist_ok=True)
        # whole or not at all: a grid's runs may write the same file side by side
        write_text_atomic(path, json.dumps({"kind": kind, "detail": detail, "value": value}))
        self.written.append(kind)


def measured_once(
    module: Any, kind: str, detail: Callable[[], dict[str, Any]], measure: Callable[[], Any]
) -> Any:
    """`measure()`, or what an earlier run measured for the same start when this run shares its
    step-0 measurements (`module.start_measurements`); a new measurement is written for later
    runs. `detail()` (what the kind measures, for the key) is computed only when shared."""
    start = getattr(module, "start_measurements", None)
    if start is None:
        return measure()
    key = detail()
    value = start.get(kind, key)
    if value is None:
        value = measure()
        start.put(kind, key, value)
    return value


def weights_digest(model: nn.Module) -> str:
    """A hash of every parameter's and buffer's name, dtype, shape and bytes."""
    digest = hashlib.blake2b(digest_size=32)
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def device_identity(device: torch.device) -> dict[str, Any]:
    """What picks the kernels and their order of summation: the device's kind and model (on a
    CPU its vector instructions), and the threads."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = torch.backends.cpu.get_cpu_capability()
    return {"type": device.type, "name": name, "threads": torch.get_num_threads()}


def files_digest(folder: Path, pattern: str = "*") -> str:
    """A hash of every file under `folder` that matches `pattern` (relative path and bytes)."""
    digest = hashlib.blake2b(digest_size=32)
    for path in sorted(p for p in Path(folder).rglob(pattern) if p.is_file()):
        digest.update(f"{path.relative_to(folder)}|".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def code_digest() -> str:
    """cpt's own source and the versions of the packages that compute the measurements."""
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package.replace("_", "-"))
        except metadata.PackageNotFoundError:
            versions[package] = None
    return _digest({"cpt": files_digest(Path(__file__).parent, "*.py"), "versions": versions})


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()
