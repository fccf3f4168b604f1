"""Token shards on disk: flat memmaps of bounded size, read back as one stream per split.

A prepared dataset folder holds, per split (`train`, `val`): shards `<split>-00000.bin`, ... of
token ids (uint16 when the vocabulary fits, else uint32; an end-of-document token after every
document), `<split>.idx.npy` with the int64 start of every document in the split's stream, and one
`meta.json` (tokenizer hash, vocab size, dtype, counts, fingerprint, shard list). A folder with a
`meta.json` is complete: it is written last, into a temporary folder that is then renamed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cpt.data.sources import SourceError

SPLITS = ("train", "val")


class ShardWriter:
    """Appends token arrays to `<prefix>-NNNNN.bin` files of at most `shard_tokens` tokens."""

    def __init__(self, folder: Path, prefix: str, dtype: str, shard_tokens: int) -> None:
        self.folder, self.prefix, self.dtype = folder, prefix, np.dtype(dtype)
        self.shard_tokens = shard_tokens
        self.shards: list[dict[str, Any]] = []
        self._handle = None
        self._in_shard = 0

    def _next_shard(self) -> None:
        self.close()
        name = f"{self.prefix}-{len(self.shards):05d}.bin"
        self._handle = (self.folder / name).open("wb")
        self.shards.append({"file": name, "tokens": 0})
        self._in_shard = 0

    def write(self, tokens: np.ndarray) -> None:
        tokens = np.asarray(tokens, dtype=self.dtype)
        while len(tokens):
            if self._handle is None or self._in_shard >= self.shard_tokens:
                self._next_shard()
            room = self.shard_tokens - self._in_shard
            chunk, tokens = tokens[:room], tokens[room:]
            chunk.tofile(self._handle)
            self._in_shard += len(chunk)
            self.shards[-1]["tokens"] += len(chunk)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class ShardedTokens:
    """Several shard files read as one flat array: `len()`, `read(start, stop)`."""

    def __init__(self, paths: list[Path], dtype: str) -> None:
        arrays = [np.memmap(p, dtype=dtype, mode="r") for p in paths if p.stat().st_size]
        self._set(arrays, dtype)

    @classmethod
    def of(cls, arrays: list[np.ndarray], dtype: str) -> ShardedTokens:
        """Arrays already open (pieces of one memory map: a Megatron source's runs)."""
        stream = cls.__new__(cls)
        stream._set([a for a in arrays if len(a)], dtype)
        return stream

    def _set(self, arrays: list[np.ndarray], dtype: str) -> None:
        self.arrays = arrays
        self.starts = np.cumsum([0] + [len(a) for a in self.arrays])
        self.dtype = np.dtype(dtype)

    def __len__(self) -> int:
        return int(self.starts[-1])

    def read(self, start: int, stop: int) -> np.ndarray:
        """Tokens [start, stop) as int64, crossing shard boundaries when needed."""
        stop = min(stop, len(self))
        pieces = []
        shard = int(np.searchsorted(self.starts, start, side="right")) - 1
        while start < stop:
            local = start - self.starts[shard]
            take = min(stop - start, len(self.arrays[shard]) - local)
            pieces.append(self.arrays[shard][local : local + take])
            start += take
            shard += 1
        if not pieces:
            return np.empty(0, dtype=np.int64)
        return np.concatenate(pieces).astype(np.int64)

    def __getitem__(self, key: slice | int) -> np.ndarray | int:
        if isinstance(key, slice):
            start, stop, _ = key.indices(len(self))
            return self.read(start, stop)
        index = key + len(self) if key < 0 else key
        if not 0 <= index < len(self):
            raise IndexError(key)
        return int(self.read(index, index + 1)[0])


@dataclass(frozen=True)
class PreparedDomain:
    path: Path
    meta: dict[str, Any]

    @property
    def name(self) -> str:
        return self.path.name

    def tokens(self, split: str) -> ShardedTokens:
        if "megatron" in self.meta:  # read in place from the source's .bin
            from cpt.data.megatron import runs_view

            return ShardedTokens.of(runs_view(self.meta, self.path, split), self.meta["dtype"])
        files = [self.path / shard["file"] for shard in self.meta["splits"][split]["shards"]]
        return ShardedTokens(files, self.meta["dtype"])

    @property
    def window_stride(self) -> int | None:
        """Tokens between window starts when fixed by the data (Pythia's 2049-token sequences)."""
        return self.meta.get("window_stride")

    def offsets(self, split: str) -> np.ndarray:
        return np.load(self.path / f"{split}.idx.npy")

    def lengths(self) -> np.ndarray:
        """A part's document lengths (a part is tokenized, not yet split: `prepare.finalize`)."""
        return np.load(self.path / "lengths.npy")


def load_prepared(path: Path) -> PreparedDomain:
    meta_file = path / "meta.json"
    if not meta_file.is_file():
        raise SourceError(f"{path}: not a prepared dataset (no meta.json); prepare it first")
    return PreparedDomain(path, json.loads(meta_file.read_text()))


def is_prepared(path: str | Path) -> bool:
    return (Path(path).expanduser() / "meta.json").is_file()
