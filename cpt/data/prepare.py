"""Tokenize a source once into shards: parallel, idempotent, atomic, splittable across machines.

`prepare_domain` streams documents to worker processes (batched encoding), writes their tokens to
shards, then holds out whole documents for validation (a seeded permutation until `val_tokens`) and
writes the `train` and `val` splits. The output folder is named by a fingerprint of the sources,
the tokenizer and the settings: an identical call reuses it, any change builds a new one. Work
happens in a temporary folder renamed at the end, so an interrupted run leaves nothing that looks
complete and never touches earlier output.

A corpus too large for one machine is prepared in parts (`part`, `num_parts`: files `part::num_parts`,
each part a complete dataset of its own in `part-NNNNN/`); `finalize` then writes the dataset's
index over all parts.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import re
import shutil
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import MISSING, OmegaConf
from tokenizers import Tokenizer
from tqdm.auto import tqdm

from cpt.data.config import DataConfig, DomainSpec
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
from cpt.data.tokenizer import eod_id, resolve_tokenizer, tokenizer_hash
from cpt.errors import reported

FORMAT_VERSION = 2
_BATCH_DOCS = 256
_BATCH_CHARS = 1 << 17


SEED, SHARD_TOKENS = 1234, 1 << 28  # defaults: the held-out documents' seed, 512 MB of uint16


def fingerprint(
    spec: DomainSpec, tokenizer: Tokenizer, seed: int = SEED, shard_tokens: int = SHARD_TOKENS
) -> str:
    parts = {
        "format": FORMAT_VERSION,
        "source": source_fingerprint(spec),
        "max_docs": spec.max_docs,
        "val_tokens": spec.val_tokens,
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


# ---- worker processes: each holds its own tokenizer, built once from its JSON --------------------
_worker: dict[str, Any] = {}


def _init_worker(tokenizer_json: str, eod: int, dtype: str, in_process: bool = False) -> None:
    if not in_process:
        os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one process per core instead
        # A forked worker inherits the job's handlers: submitit's ignores SIGTERM (the pool's
        # terminate() would then wait forever) and a SLURM time-limit warning is the parent's.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        for warning in (signal.SIGUSR1, signal.SIGUSR2):
            signal.signal(warning, signal.SIG_IGN)
    _worker.update(tokenizer=Tokenizer.from_str(tokenizer_json), eod=eod, dtype=dtype)


def _encode(batch: list[str]) -> list[np.ndarray]:
    tokenizer = _worker["tokenizer"]
    # encode_batch_fast skips character offsets, which tokens on disk never need
    encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)
    encodings = encode(batch, add_special_tokens=False)
    return [np.array([*e.ids, _worker["eod"]], dtype=_worker["dtype"]) for e in encodings]


def _batches(docs: Iterator[str]) -> Iterator[list[str]]:
    """Batches of similar size in characters, so that workers finish at about the same time."""
    batch: list[str] = []
    chars = 0
    for doc in docs:
        batch.append(doc)
        chars += len(doc)
        if len(batch) == _BATCH_DOCS or chars >= _BATCH_CHARS:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def encode_documents(
    docs: Iterator[str], tokenizer: Tokenizer, dtype: str, workers: int, desc: str
) -> Iterator[np.ndarray]:
    """Token arrays (EOD appended) in document order; `workers` > 1 encodes in processes."""
    args = (tokenizer.to_str(), eod_id(tokenizer), dtype)
    progress = tqdm(desc=f"tokenizing {desc}", unit="doc", smoothing=0.1)
    if workers <= 1:
        _init_worker(*args, in_process=True)
        encoded = map(_encode, _batches(docs))
        pool = None
    else:
        pool = mp.get_context("fork").Pool(workers, initializer=_init_worker, initargs=args)
        encoded = pool.imap(_encode, _batches(docs), chunksize=1)
    try:
        for batch in encoded:
            progress.update(len(batch))
            yield from batch
    finally:
        progress.close()
        if pool is not None:
            pool.terminate()


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
    if num_parts > 1:
        path = path / f"part-{part:05d}"
    if is_prepared(path):
        return load_prepared(path)
    vocab = tokenizer.get_vocab_size(with_added_tokens=True)
    dtype = "uint16" if vocab <= np.iinfo(np.uint16).max + 1 else "uint32"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        docs = documents(spec, spec.max_docs, part, num_parts)
        everything = ShardWriter(tmp, "all", dtype, shard_tokens)
        lengths = []
        for tokens in encode_documents(docs, tokenizer, dtype, workers, name or spec.source):
            everything.write(tokens)
            lengths.append(len(tokens))
        everything.close()
        if len(lengths) < 2:
            raise SourceError(
                f"{spec.source}: {len(lengths)} non-empty documents; expected at least 2 "
                "(one for training, one for validation)"
            )
        lengths_arr = np.array(lengths, dtype=np.int64)
        val_share = spec.val_tokens // num_parts + (part < spec.val_tokens % num_parts)
        is_val = choose_validation(lengths_arr, max(val_share, 1), seed + part)
        stream = ShardedTokens([tmp / s["file"] for s in everything.shards], dtype)
        meta = _write_splits(tmp, stream, lengths_arr, is_val, dtype, shard_tokens)
        for shard in everything.shards:
            (tmp / shard["file"]).unlink()
        meta.update(
            format=FORMAT_VERSION,
            source=spec.source,
            fingerprint=fingerprint(spec, tokenizer, seed, shard_tokens),
            tokenizer_hash=tokenizer_hash(tokenizer),
            vocab_size=vocab,
            eod_id=eod_id(tokenizer),
            dtype=dtype,
            spec={
                **source_fields(spec),
                "max_docs": spec.max_docs,
                "val_tokens": spec.val_tokens,
            },
            part=[part, num_parts],
            split_seed=seed,
        )
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        try:
            tmp.rename(path)
        except OSError:  # another process finished the same folder first: keep theirs
            if not is_prepared(path):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return load_prepared(path)


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
    """Write the index of a dataset prepared in `num_parts` parts; every part must be complete."""
    path = dataset_path(root, spec, tokenizer, seed, shard_tokens)
    if is_prepared(path):
        return load_prepared(path)
    parts = [path / f"part-{i:05d}" for i in range(num_parts)]
    missing = [p.name for p in parts if not is_prepared(p)]
    if missing:
        raise SourceError(f"{path}: parts not prepared yet: {', '.join(missing[:5])}")
    loaded = [load_prepared(p) for p in parts]
    meta = {k: v for k, v in loaded[0].meta.items() if k not in ("splits", "part")}
    meta["splits"], meta["parts"] = {}, num_parts
    tmp = path / f".index.tmp-{os.getpid()}"
    tmp.mkdir(exist_ok=True)
    for split in SPLITS:
        shards, offsets, base, documents_count = [], [], 0, 0
        for part in loaded:
            info = part.meta["splits"][split]
            shards += [
                {"file": f"{part.name}/{s['file']}", "tokens": s["tokens"]} for s in info["shards"]
            ]
            offsets.append(part.offsets(split) + base)
            base += info["tokens"]
            documents_count += info["documents"]
        np.save(tmp / f"{split}.idx.npy", np.concatenate(offsets))
        meta["splits"][split] = {"tokens": base, "documents": documents_count, "shards": shards}
    for split in SPLITS:
        (tmp / f"{split}.idx.npy").replace(path / f"{split}.idx.npy")
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    (tmp / "meta.json").replace(path / "meta.json")  # last: the index is complete only now
    tmp.rmdir()
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
        info = done[name].meta["splits"]
        print(
            f"{name}: {done[name].path}  train {info['train']['tokens']:,} tokens / "
            f"{info['train']['documents']:,} docs, val {info['val']['tokens']:,} tokens"
        )
    return done


def main() -> None:
    import hydra
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="prepare_schema", node=PrepareConfig)

    conf = str(Path(__file__).resolve().parents[2] / "conf")

    @hydra.main(version_base="1.3", config_path=conf, config_name="prepare")
    def _main(cfg: Any) -> None:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            return run_prepare(cfg)
        with reported(ValueError):
            run_prepare(cfg)

    _main()


if __name__ == "__main__":
    # run the module's own functions, not this __main__ copy of them: the tokenizing pool pickles
    # `_encode` by its module's name, and a submitit job's __main__ is submitit's
    from cpt.data import prepare

    prepare.main()
