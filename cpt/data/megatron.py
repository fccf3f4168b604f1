"""Megatron indexed datasets (`.bin` + `.idx`, as gpt-neox, Megatron-LM and NeMo write them) as a
source, read in place: the field's corpora and Pythia's own pre-shuffled training data.

The `.idx` holds a header (magic `MMIDIDX\\0\\0`, version 1, a dtype code, the sequence and document
counts), then the int32 length of every sequence, the int64 byte offset of every sequence in the
`.bin`, and the int64 sequence index at which each document starts (a leading 0, then each end).
Preparing such a source writes no tokens: a small folder in `data.dir` records which token ranges
of the `.bin` form each split (`<split>.runs.npy`: [start, stop) pairs of consecutive documents)
and where its documents start (`<split>.idx.npy`), and training reads the `.bin` by memory map.

Two ways to cut it:
- by documents (default): held-out documents are chosen as for any source (a seeded permutation
  until `val_tokens`), the rest train, each document as the index gives it;
- by Pythia training steps (`steps: {start, stop}`): Pythia's pre-shuffled file holds one
  `seq_len + 1` = 2049-token sequence per index entry, and the batch of training step s is the
  `batch_size` = 1024 sequences [s * 1024, (s + 1) * 1024) (EleutherAI/pythia, `utils/batch_viewer.py`
  and the pre-shuffled dataset's card). The steps [start, stop) train, one window per sequence;
  validation is the sequences right after them, never seen by a model trained up to `stop`.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from cpt.data.digests import file_digests
from cpt.data.sources import SourceError

MAGIC = b"MMIDIDX\x00\x00"
DTYPES = {
    1: "uint8",
    2: "int8",
    3: "int16",
    4: "int32",
    5: "int64",
    6: "float64",
    7: "float32",
    8: "uint16",
}
TOKEN_DTYPES = ("uint8", "int8", "int16", "int32", "int64", "uint16")
PREFIX = "megatron:"
SAMPLE = 1 << 20  # tokens read from each end of the .bin to check ids against the vocabulary


@dataclass
class PythiaSteps:
    """`data.domains.<name>.steps`: the training steps [start, stop) of a pre-shuffled Pythia
    file; off while both are unset."""

    start: int | None = None
    stop: int | None = None
    batch_size: int = 1024  # sequences per step in the Pythia recipe
    seq_len: int = 2048  # a sequence holds seq_len + 1 tokens

    def __post_init__(self) -> None:
        for key in ("batch_size", "seq_len"):
            if getattr(self, key) < 1:
                raise ValueError(
                    f"steps.{key}: expected a positive count, got {getattr(self, key)}"
                )
        if (self.start, self.stop) == (None, None):
            return
        if self.start is None or self.stop is None or not 0 <= self.start < self.stop:
            raise ValueError(
                f"steps: expected 0 <= start < stop, got start={self.start} stop={self.stop}"
            )

    @property
    def on(self) -> bool:
        return self.stop is not None

    def sequences(self) -> tuple[int, int]:
        """The index entries of the steps: [start * batch_size, stop * batch_size)."""
        assert self.start is not None and self.stop is not None
        return self.start * self.batch_size, self.stop * self.batch_size


class IndexedTokens:
    """A `.bin`/`.idx` pair: the token array by memory map, and the index's arrays."""

    def __init__(self, prefix: str | Path) -> None:
        prefix = str(Path(str(prefix).removeprefix(PREFIX)).expanduser())
        self.prefix = prefix
        self.idx_path, self.bin_path = Path(prefix + ".idx"), Path(prefix + ".bin")
        for path in (self.idx_path, self.bin_path):
            if not path.is_file():
                raise SourceError(
                    f"{PREFIX}{prefix}: no file {path}; expected the .bin/.idx pair of a Megatron "
                    "indexed dataset (the source names their common prefix)"
                )
        raw = np.memmap(self.idx_path, dtype=np.uint8, mode="r")
        header = 9 + 8 + 1 + 8 + 8
        if raw.size < header or bytes(raw[:9]) != MAGIC:
            raise SourceError(f"{self.idx_path}: not a Megatron index (no MMIDIDX header)")
        version, code = struct.unpack("<QB", bytes(raw[9:18]))
        sequences, documents = struct.unpack("<QQ", bytes(raw[18:34]))
        if version != 1 or DTYPES.get(code) not in TOKEN_DTYPES:
            raise SourceError(
                f"{self.idx_path}: index version {version}, dtype code {code}; expected version 1 "
                f"and an integer token dtype ({', '.join(TOKEN_DTYPES)})"
            )
        self.dtype = np.dtype(DTYPES[code])
        if raw.size < header + sequences * 12 + documents * 8:
            raise SourceError(f"{self.idx_path}: truncated: {sequences} sequences announced")
        offset = header
        self.sequence_lengths = np.frombuffer(raw, np.int32, sequences, offset)
        offset += sequences * 4
        self.sequence_pointers = np.frombuffer(raw, np.int64, sequences, offset)
        offset += sequences * 8
        self.document_indices = np.frombuffer(raw, np.int64, documents, offset)
        self.tokens = np.memmap(self.bin_path, dtype=self.dtype, mode="r")
        self._check_layout()

    def _check_layout(self) -> None:
        lengths = self.sequence_lengths.astype(np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]) * self.dtype.itemsize
        if not np.array_equal(starts, self.sequence_pointers):
            raise SourceError(
                f"{self.idx_path}: sequences are not stored back to back in the .bin; expected "
                "pointers equal to the running sum of lengths (as the indexed dataset builder writes)"
            )
        if int(lengths.sum()) != len(self.tokens):
            raise SourceError(
                f"{self.bin_path}: {len(self.tokens)} tokens, but the index describes "
                f"{int(lengths.sum())}; the pair does not belong together"
            )
        docs = self.document_indices
        if len(docs) < 1 or docs[0] != 0 or docs[-1] != len(lengths) or np.any(np.diff(docs) < 0):
            raise SourceError(f"{self.idx_path}: document indices do not cover the sequences")

    @property
    def sequence_starts(self) -> np.ndarray:
        """The token offset of every sequence, and the total at the end."""
        return np.concatenate([[0], np.cumsum(self.sequence_lengths, dtype=np.int64)])

    def document_bounds(self) -> np.ndarray:
        """[start, stop) token offsets of every document, as the index gives them."""
        starts = self.sequence_starts[self.document_indices]
        return np.stack([starts[:-1], starts[1:]], axis=1)

    def fingerprint(self) -> str:
        """The whole index, the .bin's size and its first and last MiB: names the data without
        reading hundreds of GB (any writer's change of documents changes the index)."""
        h = hashlib.sha256(file_digests([self.idx_path])[0].encode())  # cached by path/size/mtime
        size = self.bin_path.stat().st_size
        h.update(str(size).encode())
        with self.bin_path.open("rb") as handle:
            h.update(handle.read(1 << 20))
            handle.seek(max(0, size - (1 << 20)))
            h.update(handle.read(1 << 20))
        return h.hexdigest()

    def check_tokenizer(self, vocab_size: int, eod: int, eod_name: str, *, packed: bool) -> None:
        """One line when the file was not written with the run's tokenizer."""
        ends = np.concatenate([self.tokens[:SAMPLE], self.tokens[-SAMPLE:]])
        if len(ends) and (int(ends.max()) >= vocab_size or int(ends.min()) < 0):
            raise SourceError(
                f"{PREFIX}{self.prefix}: token id {int(ends.max())} is outside the run "
                f"tokenizer's vocabulary of {vocab_size}; expected data.tokenizer to be the "
                "tokenizer the file was written with"
            )
        bounds = self.document_bounds()[:1000]
        bounds = bounds[bounds[:, 1] > bounds[:, 0]]
        if packed:  # packed sequences: documents end inside them
            seen = np.asarray(self.tokens[: min(len(self.tokens), 1 << 16)])
            found = bool(np.any(seen == eod))
        else:
            found = bool(np.any(np.asarray(self.tokens[bounds[:, 1] - 1]) == eod))
        if len(bounds) and not found:
            where = "in its first sequences" if packed else "at the end of its documents"
            raise SourceError(
                f"{PREFIX}{self.prefix}: no end-of-document token {eod} ({eod_name}) {where}; "
                "expected data.tokenizer to be the tokenizer the file was written with (and "
                "documents written with their end-of-document token)"
            )


def open_indexed(source: str | Path) -> IndexedTokens:
    """The pair a source names, parsed and checked once per version of its files: the name of the
    prepared folder, its preparation and every waiting rank's poll all ask for it."""
    prefix = str(Path(str(source).removeprefix(PREFIX)).expanduser())
    try:
        key = tuple((p.stat().st_size, p.stat().st_mtime_ns) for p in _pair(prefix))
    except OSError:
        return IndexedTokens(prefix)  # a missing file: the constructor says which, in one line
    return _opened(prefix, key)


def _pair(prefix: str) -> tuple[Path, Path]:
    return Path(prefix + ".idx"), Path(prefix + ".bin")


@lru_cache(maxsize=16)
def _opened(prefix: str, key: tuple) -> IndexedTokens:
    return IndexedTokens(prefix)


def prepare_megatron(
    path: Path,
    spec: Any,
    indexed: IndexedTokens,
    seed: int,
    choose_validation: Any,
    meta: dict[str, Any],
) -> dict[str, Any]:
    """Write the split records of `spec` (a `DomainSpec` with a `megatron:` source) into `path`."""
    steps = spec.step_range
    if steps is not None:
        first, stop = steps.sequences()
        width = steps.seq_len + 1
        count = len(indexed.sequence_lengths)
        held = math.ceil(spec.val_tokens / width)
        if stop + held > count:
            raise SourceError(
                f"{spec.source}: steps [{steps.start}, {steps.stop}) and {held} validation "
                f"sequences after them need {stop + held} sequences; the file has {count}"
            )
        wrong = np.flatnonzero(indexed.sequence_lengths[first : stop + held] != width)
        if len(wrong):
            raise SourceError(
                f"{spec.source}: sequence {first + int(wrong[0])} has "
                f"{int(indexed.sequence_lengths[first + wrong[0]])} tokens; expected "
                f"steps.seq_len + 1 = {width} in a pre-shuffled file"
            )
        starts = indexed.sequence_starts
        splits = {
            "train": np.array([[starts[first], starts[stop]]]),
            "val": np.array([[starts[stop], starts[stop + held]]]),
        }
        lengths = {"train": np.full(stop - first, width), "val": np.full(held, width)}
        meta["window_stride"] = width
    else:
        bounds = indexed.document_bounds()
        if spec.max_docs is not None:
            bounds = bounds[: spec.max_docs]
        doc_lengths = bounds[:, 1] - bounds[:, 0]
        keep = doc_lengths > 0
        bounds, doc_lengths = bounds[keep], doc_lengths[keep]
        if len(bounds) < 2:
            raise SourceError(
                f"{spec.source}: {len(bounds)} non-empty documents; expected at least 2 "
                "(one for training, one for validation)"
            )
        is_val = choose_validation(doc_lengths, spec.val_tokens, seed)
        splits, lengths = {}, {}
        for split, chosen in (("train", ~is_val), ("val", is_val)):
            picked = bounds[chosen]
            # consecutive documents of a split form one run of the .bin: a row per run
            breaks = np.flatnonzero(picked[1:, 0] != picked[:-1, 1]) + 1
            runs = [(int(r[0, 0]), int(r[-1, 1])) for r in np.split(picked, breaks) if len(r)]
            splits[split] = np.array(runs, dtype=np.int64).reshape(-1, 2)
            lengths[split] = doc_lengths[chosen]
    meta["splits"] = {}
    for split in ("train", "val"):
        np.save(path / f"{split}.runs.npy", splits[split].astype(np.int64))
        offsets = np.concatenate([[0], np.cumsum(lengths[split])[:-1]]).astype(np.int64)
        np.save(path / f"{split}.idx.npy", offsets)
        meta["splits"][split] = {
            "tokens": int(np.sum(lengths[split])),
            "documents": len(lengths[split]),
            "runs": len(splits[split]),
        }
    meta["megatron"] = {"prefix": indexed.prefix, "dtype": indexed.dtype.name}
    (path / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def runs_view(meta: dict[str, Any], folder: Path, split: str) -> list[np.ndarray]:
    """The memory-mapped pieces of the .bin that make up `split`, in order (no copy)."""
    tokens = np.memmap(meta["megatron"]["prefix"] + ".bin", meta["megatron"]["dtype"], mode="r")
    runs = np.load(folder / f"{split}.runs.npy")
    return [tokens[int(a) : int(b)] for a, b in runs]
