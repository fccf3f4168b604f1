"""Token files: a corpus tokenized once into flat memmaps, document offsets and a `meta.json`.

Layout of a prepared domain folder (its name carries the fingerprint of everything that shaped it):

    train.bin  val.bin          flat token ids (uint16 when the vocabulary fits, else uint32)
    train.idx.npy val.idx.npy   int64 start offset of every document (an EOD token ends each)
    meta.json                   tokenizer hash, vocab size, dtype, counts, fingerprint

Validation documents are chosen by a seeded permutation of whole documents until `val_tokens` is
reached, so they never appear in training and are the same for every run that uses the folder.
Preparation writes into a temporary folder and renames it: a folder with a `meta.json` is complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer
from tqdm.auto import tqdm

from cpt.data.corpora import SourceError, documents, source_fingerprint
from cpt.data.tokenizer import eod_id, tokenizer_hash

FORMAT_VERSION = 1
SPLITS = ("train", "val")
_BATCH = 64


@dataclass(frozen=True)
class DomainSpec:
    """What to prepare: a source and how to split it."""

    source: str
    text_field: str = "text"
    max_docs: int | None = None
    val_tokens: int = 32768
    seed: int = 1234


@dataclass(frozen=True)
class PreparedDomain:
    path: Path
    meta: dict[str, Any]

    def tokens(self, split: str) -> np.ndarray:
        return np.memmap(self.path / f"{split}.bin", dtype=self.meta["dtype"], mode="r")

    def offsets(self, split: str) -> np.ndarray:
        return np.load(self.path / f"{split}.idx.npy")


def fingerprint(spec: DomainSpec, tokenizer: Tokenizer) -> str:
    parts = {
        "format": FORMAT_VERSION,
        "source": source_fingerprint(spec.source),
        "text_field": spec.text_field,
        "max_docs": spec.max_docs,
        "val_tokens": spec.val_tokens,
        "seed": spec.seed,
        "tokenizer": tokenizer_hash(tokenizer),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def domain_path(root: Path, spec: DomainSpec, tokenizer: Tokenizer) -> Path:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", Path(spec.source).name.split(".")[0]).strip("-") or "data"
    return root / f"{slug}-{fingerprint(spec, tokenizer)[:16]}"


def load_prepared(path: Path) -> PreparedDomain:
    meta_file = path / "meta.json"
    if not meta_file.is_file():
        raise SourceError(f"{path}: not a prepared dataset (no meta.json); run the preparation first")
    return PreparedDomain(path, json.loads(meta_file.read_text()))


def prepare_domain(root: Path, spec: DomainSpec, tokenizer: Tokenizer, name: str = "") -> PreparedDomain:
    """Tokenize `spec.source` into `root`, or reuse the folder an identical earlier call wrote."""
    path = domain_path(root, spec, tokenizer)
    if (path / "meta.json").is_file():
        return load_prepared(path)
    docs = list(documents(spec.source, spec.text_field, spec.max_docs))
    if len(docs) < 2:
        raise SourceError(
            f"{spec.source}: {len(docs)} non-empty documents; expected at least 2 "
            "(one for training, one for validation)"
        )
    eod = eod_id(tokenizer)
    encoded = []
    for start in tqdm(range(0, len(docs), _BATCH), desc=f"tokenizing {name or spec.source}", unit="batch"):
        for enc in tokenizer.encode_batch(docs[start : start + _BATCH], add_special_tokens=False):
            encoded.append(enc.ids + [eod])
    val_docs = _choose_validation(np.array([len(e) for e in encoded]), spec.val_tokens, spec.seed)
    vocab = tokenizer.get_vocab_size(with_added_tokens=True)
    dtype = "uint16" if vocab <= np.iinfo(np.uint16).max + 1 else "uint32"
    meta: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "source": spec.source,
        "fingerprint": fingerprint(spec, tokenizer),
        "tokenizer_hash": tokenizer_hash(tokenizer),
        "vocab_size": vocab,
        "eod_id": eod,
        "dtype": dtype,
        "spec": spec.__dict__,
        "splits": {},
    }
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{path.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        for split in SPLITS:
            chosen = [e for i, e in enumerate(encoded) if (i in val_docs) == (split == "val")]
            lengths = np.array([len(e) for e in chosen], dtype=np.int64)
            offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
            flat = np.fromiter((t for e in chosen for t in e), dtype=dtype, count=int(lengths.sum()))
            flat.tofile(tmp / f"{split}.bin")
            np.save(tmp / f"{split}.idx.npy", offsets)
            meta["splits"][split] = {"tokens": int(lengths.sum()), "documents": len(chosen)}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        try:
            tmp.rename(path)
        except OSError:  # another process finished the same folder first: keep theirs
            if not (path / "meta.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return load_prepared(path)


def _choose_validation(lengths: np.ndarray, val_tokens: int, seed: int) -> set[int]:
    """Whole documents, in a seeded order, until `val_tokens`; at least one, never all."""
    order = np.random.default_rng(seed).permutation(len(lengths))
    chosen, total = set(), 0
    for i in order[:-1]:
        if total >= val_tokens and chosen:
            break
        chosen.add(int(i))
        total += int(lengths[i])
    return chosen
