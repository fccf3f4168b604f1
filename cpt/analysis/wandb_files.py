"""An offline wandb run read from its own files, without network or an account.

wandb (0.19 on) writes an offline run as one transaction log, `run-<id>.wandb`: a LevelDB-style log
of 32 KiB blocks holding wandb's own protobuf `Record`s (the run with its config, history rows,
summary updates, the exit code). `wandb sync` uploads exactly these records; reading them here shows
what a dashboard will get (tests check the flat summary and config keys this way) and lets
`cpt.analysis.sync` say what each run holds before it is uploaded. `wandb sync` leaves a
`run-<id>.wandb.synced` file beside a log it uploaded.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HEADER = b":W&B\xe1\xbe\x00"  # magic, 0xBEE1, version 0
BLOCK = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


@dataclass
class OfflineRun:
    folder: Path
    id: str = ""
    name: str = ""
    group: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    exit_code: int | None = None

    @property
    def log(self) -> Path:
        return next(self.folder.glob("run-*.wandb"))

    @property
    def synced(self) -> bool:
        return self.log.with_name(self.log.name + ".synced").exists()


def records(path: Path) -> Iterator[bytes]:
    """The payloads of a wandb transaction log, in order."""
    data = Path(path).read_bytes()
    if not data.startswith(HEADER):
        raise ValueError(f"{path}: not a wandb transaction log (no :W&B header)")
    pending, at = b"", len(HEADER)
    while at + 7 <= len(data):
        left = BLOCK - at % BLOCK
        if left < 7:  # a block's tail too short for a header is padding
            at += left
            continue
        _, length, kind = struct.unpack("<IHB", data[at : at + 7])
        payload = data[at + 7 : at + 7 + length]
        at += 7 + length
        if kind == FULL:
            yield payload
        elif kind == FIRST:
            pending = payload
        elif kind == MIDDLE:
            pending += payload
        elif kind == LAST:
            yield pending + payload
            pending = b""
        elif kind == 0 and length == 0:
            at += BLOCK - at % BLOCK if at % BLOCK else 0  # zero padding to the block's end


def _key(item: Any) -> str:
    return item.key or "/".join(item.nested_key)


def read_run(folder: str | Path, header_only: bool = False) -> OfflineRun:
    """Config (nested, as wandb's API returns it), summary, history rows and exit code; with
    `header_only`, only what the run record holds (id, name, group, tags, first config)."""
    from wandb.proto import wandb_internal_pb2 as pb

    run = OfflineRun(Path(folder))
    for payload in records(run.log):
        record = pb.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.id, run.name = record.run.run_id, record.run.display_name
            run.group, run.tags = record.run.run_group, list(record.run.tags)
            _update(run.config, record.run.config.update, unwrap=True)
            if header_only:
                break
        elif kind == "config":
            _update(run.config, record.config.update, unwrap=True)
        elif kind == "history":
            row: dict[str, Any] = {}
            _update(row, record.history.item)
            run.history.append(row)
        elif kind == "summary":
            _update(run.summary, record.summary.update)
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    run.config.pop("_wandb", None)
    return run


def _update(target: dict[str, Any], items: Any, unwrap: bool = False) -> None:
    for item in items:
        value = json.loads(item.value_json)
        if unwrap and isinstance(value, dict) and set(value) == {"value"}:
            value = value["value"]
        target[_key(item)] = value


def offline_runs(folder: str | Path) -> list[Path]:
    """Every offline run folder below `folder` (a job or a whole sweep)."""
    return sorted(p.parent for p in Path(folder).glob("**/wandb/offline-run-*/run-*.wandb"))
