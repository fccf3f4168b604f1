"""Documents to token arrays in worker processes, each holding its own tokenizer, in document order.

The workers are forked; each resets the signal handlers a cluster job gave its parent, so the pool
can always be terminated.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
from collections.abc import Iterator
from typing import Any

import numpy as np
from tokenizers import Tokenizer
from tqdm.auto import tqdm

from cpt.data.tokenizer import eod_id, start_id

_BATCH_DOCS = 256
_BATCH_CHARS = 1 << 17

_worker: dict[str, Any] = {}


def _init_worker(
    tokenizer_json: str, start: list[int], eod: int, dtype: str, in_process: bool = False
) -> None:
    if not in_process:
        os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one process per core instead
        # A forked worker inherits the job's handlers: submitit's ignores SIGTERM (the pool's
        # terminate() would then wait forever) and a SLURM time-limit warning is the parent's.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        for warning in (signal.SIGUSR1, signal.SIGUSR2):
            signal.signal(warning, signal.SIG_IGN)
    _worker.update(tokenizer=Tokenizer.from_str(tokenizer_json), start=start, eod=eod, dtype=dtype)


def _encode(batch: list[str]) -> list[np.ndarray]:
    tokenizer = _worker["tokenizer"]
    # encode_batch_fast skips character offsets, which tokens on disk never need
    encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)
    encodings = encode(batch, add_special_tokens=False)
    start, eod, dtype = _worker["start"], _worker["eod"], _worker["dtype"]
    return [np.array([*start, *e.ids, eod], dtype=dtype) for e in encodings]


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
    """Token arrays (the start token before, if the tokenizer has one; EOD after) in document
    order; `workers` > 1 encodes in processes."""
    start = start_id(tokenizer)
    args = (tokenizer.to_str(), [] if start is None else [start], eod_id(tokenizer), dtype)
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
