"""Read throughput of a Megatron source (`megatron:<prefix>`, read in place by memory map) against
cpt's own token folders, holding the same documents, measured in one run (interleaved, medians).

Both are prepared from the same tokens (the built-in corpora, encoded once, about 5 M tokens by
default; `--repeat` makes the corpus larger): the token folder by `prepare_domain` from JSON lines,
the Megatron pair by megatron-core's indexed dataset builder. Each round reads every training
window of both in one shuffled order, as the sampler does (`TokenWindows[i]`: a slice of the
stream, to a tensor), and times it.

    python scripts/bench_megatron.py [--rounds 5] [--repeat 4] [--seq-len 2048]

Ends with `megatron_read_ratio=<x>` (Megatron windows per second / token-folder windows per
second; 1.0 is parity) and names the processor.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from cpt.data.prepare import DomainSpec, prepare_domain
from cpt.data.sources import SourceSpec, documents
from cpt.data.tokenizer import eod_id, train_bpe
from cpt.data.windows import TokenWindows
from cpt.scale.hardware import processor


def read_all(windows: TokenWindows, order: np.ndarray) -> float:
    started = time.perf_counter()
    total = 0
    for i in order:
        total += int(windows[int(i)]["input_ids"][0])
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=1, help="copies of the built-in corpora")
    parser.add_argument("--seq-len", type=int, default=2048)
    args = parser.parse_args()
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        texts = [d for name in ("python-docs", "python-code") for d in documents(SourceSpec(name))]
        texts = texts * args.repeat
        tokenizer = train_bpe(texts[:2000], 8192, root / "tokenizer.json")
        jsonl = root / "corpus.jsonl"
        jsonl.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
        folder = prepare_domain(root / "data", DomainSpec(str(jsonl)), tokenizer, workers=2)
        eod = eod_id(tokenizer)
        builder = IndexedDatasetBuilder(str(root / "corpus.bin"), dtype=np.uint16)
        for encoding in tokenizer.encode_batch(texts, add_special_tokens=False):
            ids = encoding.ids + [eod]
            builder.add_document(torch.tensor(ids), [len(ids)])
        builder.finalize(str(root / "corpus.idx"))
        indexed = prepare_domain(
            root / "data", DomainSpec(f"megatron:{root / 'corpus'}"), tokenizer
        )
        same = np.array_equal(folder.tokens("train")[:], indexed.tokens("train")[:])
        a = TokenWindows(folder.tokens("train"), args.seq_len)
        b = TokenWindows(indexed.tokens("train"), args.seq_len)
        order = np.random.default_rng(0).permutation(len(a))
        times: dict[str, list[float]] = {"folder": [], "megatron": []}
        for _ in range(args.rounds):
            times["folder"].append(read_all(a, order))
            times["megatron"].append(read_all(b, order))
        tokens = len(folder.tokens("train"))
        print(f"processor: {processor()}")
        print(
            f"{tokens:,} training tokens, {len(a):,} windows of {args.seq_len}; same tokens: {same}"
        )
        print(f"megatron runs in the train split: {indexed.meta['splits']['train']['runs']}")
        for name, values in times.items():
            median = statistics.median(values)
            print(f"{name:9s} {median * 1e3:8.1f} ms per pass, {len(a) / median:10.0f} windows/s")
        ratio = statistics.median(times["folder"]) / statistics.median(times["megatron"])
        print(f"megatron_read_ratio={ratio:.2f}")


if __name__ == "__main__":
    main()
