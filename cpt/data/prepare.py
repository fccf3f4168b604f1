"""Tokenize a source once into shards: parallel, idempotent, atomic, splittable across machines.

`prepare_domain` streams documents to worker processes (batched encoding), writes their tokens to
shards, then holds out whole documents for validation (a seeded permutation until `val_tokens`) and
writes the `train` and `val` splits. The output folder is named by a fingerprint of the sources,
the tokenizer and the settings: an identical call reuses it, any change builds a new one. Work
happens in a temporary folder renamed at the end, so an interrupted run leaves nothing that looks
complete and never touches earlier output.

A corpus too large for one machine is prepared in parts (`part`, `num_parts`: the k-th contiguous
run of files or rows): each part only tokenizes, into `<dataset>.parts/part-NNNNN/`. `finalize` then
holds out documents over the parts' documents in order, exactly as one process does, writes the
dataset (byte for byte what one process writes) and removes the parts.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import MISSING, OmegaConf
from tokenizers import Tokenizer

from cpt.data.config import DataConfig, DomainSpec
from cpt.data.encode import encode_documents
from cpt.data.megatron import open_indexed, prepare_megatron
from cpt.data.shards import (
    SPLITS,
    PreparedDomain,
    ShardedTokens,
    ShardWriter,
    is_prepared,
    load_prepared,
)
from cpt.data.sources import SourceError, check_source, documents, source_fields
from cpt.data.sources import fingerprint as source_fingerprint
from cpt.data.tokenizer import eod_id, resolve_tokenizer, start_id, tokenizer_hash
from cpt.errors import reported
from cpt.run.user_configs import CONF, check_search_path

FORMAT_VERSION = 2


SEED, SHARD_TOKENS = 1234, 1 << 28  # defaults: the held-out documents' seed, 512 MB of uint16


def fingerprint(
    spec: DomainSpec, tokenizer: Tokenizer, seed: int = SEED, shard_tokens: int = SHARD_TOKENS
) -> str:
    parts = {
        "format": FORMAT_VERSION,
        "source": source_fingerprint(spec),
        # a Megatron pair: its contents (where it lies is in the source; re-preparing is cheap)
        **({"indexed": open_indexed(spec.source).fingerprint()} if spec.kind == "megatron" else {}),
        "max_docs": spec.max_docs,
        "val_tokens": spec.val_tokens,
        **({"steps": vars(spec.steps)} if spec.step_range else {}),  # others: names unchanged
        "seed": seed,
        "shard_tokens": shard_tokens,
        "tokenizer": tokenizer_hash(tokenizer),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def dataset_path(
    root: Path,
    spec: DomainSpec,
    tokenizer: Tokenizer,
    seed: int = SEED,
    shard_tokens: int = SHARD_TOKENS,
) -> Path:
    stem = spec.source.removeprefix("hf:").rstrip("/*")
    slug = re.sub(r"[^A-Za-z0-9]+", "-", Path(stem).name.split(".")[0]).strip("-") or "data"
    return root / f"{slug}-{fingerprint(spec, tokenizer, seed, shard_tokens)[:16]}"


def check_compatible(prepared: PreparedDomain, tokenizer: Tokenizer) -> PreparedDomain:
    """A prepared folder named directly must have been built with the run's tokenizer."""
    if prepared.meta.get("tokenizer_hash") != tokenizer_hash(tokenizer):
        raise SourceError(
            f"{prepared.path}: token files were built with another tokenizer than this run's "
            "data.tokenizer; prepare the source again with it"
        )
    return prepared


def prepare_domain(
    root: Path,
    spec: DomainSpec,
    tokenizer: Tokenizer,
    name: str = "",
    workers: int = 1,
    part: int = 0,
    num_parts: int = 1,
    *,
    seed: int = SEED,
    shard_tokens: int = SHARD_TOKENS,
) -> PreparedDomain:
    """Tokenize `spec` (or one part of it) under `root`, or reuse what an identical call wrote.

    `seed` chooses the held-out documents; `shard_tokens` is the size of a shard file.
    """
    check_source(spec)
    path = dataset_path(root, spec, tokenizer, seed, shard_tokens)
    if is_prepared(path):  # also a part whose dataset was finalized: nothing left to do
        return load_prepared(path)
    if spec.kind == "megatron":  # already tokens: no parts, nothing copied
        return _prepare_megatron(path, spec, tokenizer, seed, shard_tokens)
    vocab = tokenizer.get_vocab_size(with_added_tokens=True)
    if num_parts > 1:
        path = parts_folder(path) / f"part-{part:05d}"
        if is_prepared(path):
            return load_prepared(path)
    dtype = "uint16" if vocab <= np.iinfo(np.uint16).max + 1 else "uint32"
    meta = _meta(spec, tokenizer, seed, shard_tokens, dtype)
    with _building(path) as tmp:
        docs = documents(spec, spec.max_docs, part, num_parts)
        everything = ShardWriter(tmp, "all", dtype, shard_tokens)
        lengths = []
        for tokens in encode_documents(docs, tokenizer, dtype, workers, name or spec.source):
            everything.write(tokens)
            lengths.append(len(tokens))
        everything.close()
        lengths_arr = np.array(lengths, dtype=np.int64)
        if num_parts > 1:  # tokens only: the split is made over all parts by `finalize`
            np.save(tmp / "lengths.npy", lengths_arr)
            meta.update(part=[part, num_parts], shards=everything.shards)
        else:
            stream = ShardedTokens([tmp / s["file"] for s in everything.shards], dtype)
            meta = _split(tmp, stream, lengths_arr, spec, seed, shard_tokens, dtype) | meta
            for shard in everything.shards:
                (tmp / shard["file"]).unlink()
        meta["split_seed"] = seed
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return load_prepared(path)


def _meta(
    spec: DomainSpec, tokenizer: Tokenizer, seed: int, shard_tokens: int, dtype: str
) -> dict[str, Any]:
    """What every prepared folder's meta.json says of its source, tokenizer and settings."""
    return {
        "format": FORMAT_VERSION,
        "source": spec.source,
        "fingerprint": fingerprint(spec, tokenizer, seed, shard_tokens),
        "tokenizer_hash": tokenizer_hash(tokenizer),
        "vocab_size": tokenizer.get_vocab_size(with_added_tokens=True),
        "eod_id": eod_id(tokenizer),
        "start_id": start_id(tokenizer),
        "dtype": dtype,
        "spec": {**source_fields(spec), "max_docs": spec.max_docs, "val_tokens": spec.val_tokens},
    }


def _prepare_megatron(
    path: Path, spec: DomainSpec, tokenizer: Tokenizer, seed: int, shard_tokens: int
) -> PreparedDomain:
    indexed = open_indexed(spec.source)
    eod = eod_id(tokenizer)
    vocab = tokenizer.get_vocab_size(with_added_tokens=True)
    indexed.check_tokenizer(
        vocab, eod, str(tokenizer.id_to_token(eod)), packed=spec.step_range is not None
    )
    meta = _meta(spec, tokenizer, seed, shard_tokens, indexed.dtype.name)
    meta["spec"]["steps"] = None if spec.step_range is None else vars(spec.steps)
    meta["split_seed"] = seed
    with _building(path) as tmp:
        prepare_megatron(tmp, spec, indexed, seed, choose_validation, meta)
    return load_prepared(path)


def parts_folder(path: Path) -> Path:
    """Where the parts of the dataset at `path` are tokenized until `finalize` merges them."""
    return path.with_name(path.name + ".parts")


@contextmanager
def _building(path: Path) -> Iterator[Path]:
    """A temporary folder renamed to `path` when the block completes; removed whatever happens."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        try:
            tmp.rename(path)
        except OSError:  # another process finished the same folder first: keep theirs
            if not is_prepared(path):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _split(
    folder: Path,
    stream: ShardedTokens,
    lengths: np.ndarray,
    spec: DomainSpec,
    seed: int,
    shard_tokens: int,
    dtype: str,
) -> dict[str, Any]:
    if len(lengths) < 2:
        raise SourceError(
            f"{spec.source}: {len(lengths)} non-empty documents; expected at least 2 "
            "(one for training, one for validation)"
        )
    is_val = choose_validation(lengths, spec.val_tokens, seed)
    return _write_splits(folder, stream, lengths, is_val, dtype, shard_tokens)


def choose_validation(lengths: np.ndarray, val_tokens: int, seed: int) -> np.ndarray:
    """A boolean mask of whole documents, in a seeded order until `val_tokens`; never all."""
    order = np.random.default_rng(seed).permutation(len(lengths))
    cumulative = np.cumsum(lengths[order])
    count = int(np.searchsorted(cumulative, val_tokens)) + 1  # the first crossing the budget
    count = min(max(count, 1), len(lengths) - 1)
    mask = np.zeros(len(lengths), dtype=bool)
    mask[order[:count]] = True
    return mask


def _write_splits(
    folder: Path,
    stream: ShardedTokens,
    lengths: np.ndarray,
    is_val: np.ndarray,
    dtype: str,
    shard_tokens: int,
) -> dict[str, Any]:
    """Copy runs of consecutive documents of each split from the stream into that split's shards."""
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    meta: dict[str, Any] = {"splits": {}}
    for split in SPLITS:
        chosen = np.flatnonzero(is_val == (split == "val"))
        writer = ShardWriter(folder, split, dtype, shard_tokens)
        # consecutive chosen documents form one contiguous run of the stream: copy runs, not docs
        breaks = np.flatnonzero(np.diff(chosen) != 1) + 1
        for run in np.split(chosen, breaks):
            if len(run):
                writer.write(
                    stream.read(int(starts[run[0]]), int(starts[run[-1]] + lengths[run[-1]]))
                )
        writer.close()
        split_lengths = lengths[chosen]
        np.save(
            folder / f"{split}.idx.npy",
            np.concatenate([[0], np.cumsum(split_lengths)[:-1]]).astype(np.int64),
        )
        meta["splits"][split] = {
            "tokens": int(split_lengths.sum()),
            "documents": len(chosen),
            "shards": writer.shards,
        }
    return meta


def finalize(
    root: Path,
    spec: DomainSpec,
    tokenizer: Tokenizer,
    num_parts: int,
    *,
    seed: int = SEED,
    shard_tokens: int = SHARD_TOKENS,
) -> PreparedDomain:
    """Write the dataset of `num_parts` tokenized parts as one process would have written it."""
    path = dataset_path(root, spec, tokenizer, seed, shard_tokens)
    if is_prepared(path):
        return load_prepared(path)
    parts = [parts_folder(path) / f"part-{i:05d}" for i in range(num_parts)]
    missing = [p.name for p in parts if not is_prepared(p)]
    if missing:
        raise SourceError(f"{path}: parts not prepared yet: {', '.join(missing[:5])}")
    loaded = [load_prepared(p) for p in parts]
    wrong = [p.name for p in loaded if p.meta.get("part") != [int(p.name[5:]), num_parts]]
    if wrong:
        raise SourceError(
            f"{parts_folder(path)}: {wrong[0]} was prepared with another num_parts; "
            f"expected parts of num_parts={num_parts}"
        )
    lengths = np.concatenate([np.load(p.path / "lengths.npy") for p in loaded])
    if spec.max_docs is not None:  # each part kept its first max_docs: the whole keeps its own
        lengths = lengths[: spec.max_docs]
    files = [p.path / s["file"] for p in loaded for s in p.meta["shards"]]
    meta = {k: v for k, v in loaded[0].meta.items() if k not in ("part", "shards")}
    with _building(path) as tmp:
        stream = ShardedTokens(files, meta["dtype"])
        meta = _split(tmp, stream, lengths, spec, seed, shard_tokens, meta["dtype"]) | meta
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    shutil.rmtree(parts_folder(path), ignore_errors=True)
    return load_prepared(path)


# ---- command line: python -m cpt.data.prepare data=<option> [part=K num_parts=N | finalize=true] ---
@dataclass
class PrepareConfig:
    data: DataConfig = MISSING
    part: int = 0
    num_parts: int = 1
    finalize: bool = False
    only: Any = None  # a list of domain names; default: every domain of the data config


def run_prepare(cfg: Any) -> dict[str, PreparedDomain]:
    if not 0 <= cfg.part < cfg.num_parts:
        raise SourceError(f"part: {cfg.part} is not in [0, num_parts={cfg.num_parts})")
    data = cfg.data if isinstance(cfg.data, DataConfig) else OmegaConf.to_object(cfg.data)
    root = Path(data.dir).expanduser()
    names = list(cfg.only) if cfg.only else list(data.domains)
    unknown = [name for name in names if name not in data.domains]
    if unknown:
        raise SourceError(
            f"only: {unknown[0]!r} is not a domain; expected one of {list(data.domains)}"
        )
    tokenizer = resolve_tokenizer(data.tokenizer, root, data.domains.values())
    layout = {"seed": data.split_seed, "shard_tokens": data.shard_tokens}
    done = {}
    for name in names:
        spec = data.domains[name]
        if cfg.finalize:
            done[name] = finalize(root, spec, tokenizer, cfg.num_parts, **layout)
        else:
            done[name] = prepare_domain(
                root, spec, tokenizer, name, data.prepare_workers, cfg.part, cfg.num_parts, **layout
            )
        print(f"{name}: {done[name].path}  {_counts(done[name])}")
    return done


def _counts(prepared: PreparedDomain) -> str:
    if "splits" not in prepared.meta:  # one part, tokenized, waiting for `finalize`
        lengths = prepared.lengths()
        return f"part {prepared.meta['part'][0]}: {lengths.sum():,} tokens / {len(lengths):,} docs"
    info = prepared.meta["splits"]
    return (
        f"train {info['train']['tokens']:,} tokens / {info['train']['documents']:,} docs, "
        f"val {info['val']['tokens']:,} tokens"
    )


def main() -> None:
    import hydra
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="prepare_schema", node=PrepareConfig)

    with reported():
        check_search_path(sys.argv[1:])  # one's own config folder: there, and hiding nothing

    @hydra.main(version_base="1.3", config_path=str(CONF), config_name="prepare")
    def _main(cfg: Any) -> None:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            return run_prepare(cfg)
        with reported(ValueError):
            run_prepare(cfg)

    _main()


if __name__ == "__main__":
    # run the module's own functions, not this __main__ copy of them: a launcher pickles the task
    # function by its module's name, and a submitit job's __main__ is submitit's
    from cpt.data import prepare

    prepare.main()
