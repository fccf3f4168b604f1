"""Benchmark of the data path, both sides measured in the same run (A/B interleaved, medians).

1. Preparation: `cpt.data.prepare` with 2 worker processes against a single-process
   `datasets.load_dataset("json") + Dataset.map(batched=True)` with the same tokenizer on the same
   JSON-lines files (the built-in corpora written out), each from files to tokens on disk.
2. Loading: the per-batch cost of the replay mixture sampler and DataLoader against one training
   step (forward, backward, AdamW) of the `tiny` preset on the same batches.

    python scripts/bench_prepare.py [--rounds 3]

Ends with `prepare_speedup=<x> loader_overhead_pct=<y>`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from cpt.data.config import DataConfig, DomainSpec
from cpt.data.datamodule import CPTDataModule
from cpt.data.prepare import prepare_domain
from cpt.data.sources import SourceSpec, documents
from cpt.data.tokenizer import train_bpe
from cpt.models import GPTNeoX, config_from_name


def write_corpus(folder: Path) -> tuple[list[Path], int]:
    files, size = [], 0
    for name in ("python-docs", "python-code"):
        path = folder / f"{name}.jsonl"
        with path.open("w") as handle:
            for doc in documents(SourceSpec(name)):
                handle.write(json.dumps({"text": doc}) + "\n")
        files.append(path)
        size += path.stat().st_size
    return files, size


def run_cpt(pattern: str, tokenizer, root: Path) -> tuple[float, int]:
    started = time.perf_counter()
    prepared = prepare_domain(root, DomainSpec(pattern, val_tokens=1), tokenizer, workers=2)
    seconds = time.perf_counter() - started
    return seconds, sum(prepared.meta["splits"][s]["tokens"] for s in ("train", "val"))


def run_datasets(files: list[Path], tokenizer, cache: Path) -> tuple[float, int]:
    import datasets

    datasets.disable_progress_bars()
    started = time.perf_counter()
    data = datasets.load_dataset(
        "json", data_files=[str(f) for f in files], split="train", cache_dir=str(cache)
    )

    def encode(batch):
        return {
            "input_ids": [
                e.ids for e in tokenizer.encode_batch(batch["text"], add_special_tokens=False)
            ]
        }

    data = data.map(
        encode, batched=True, remove_columns=["text"], cache_file_name=str(cache / "tokens.arrow")
    )
    seconds = time.perf_counter() - started
    return seconds, sum(len(ids) + 1 for ids in data["input_ids"])  # + EOD, as cpt counts


def bench_prepare(rounds: int, work: Path) -> float:
    files, size = write_corpus(work)
    tokenizer = train_bpe(
        (d for f in ("python-docs", "python-code") for d in documents(SourceSpec(f))),
        4096,
        work / "tok.json",
    )
    pattern = str(work / "*.jsonl")
    ours, theirs = [], []
    for r in range(rounds):
        ours.append(run_cpt(pattern, tokenizer, work / f"cpt-{r}"))
        theirs.append(run_datasets(files, tokenizer, work / f"hf-{r}"))
    t_ours = statistics.median(s for s, _ in ours)
    t_theirs = statistics.median(s for s, _ in theirs)
    tokens = ours[0][1]
    print(f"corpus: {size / 1e6:.1f} MB in {len(files)} jsonl files, {tokens:,} tokens")
    print(
        f"cpt.data.prepare (2 workers):      {t_ours:6.2f} s  {size / 1e6 / t_ours:6.2f} MB/s  {tokens / t_ours:10,.0f} tokens/s"
    )
    print(
        f"datasets.map (single process):     {t_theirs:6.2f} s  {size / 1e6 / t_theirs:6.2f} MB/s  {theirs[0][1] / t_theirs:10,.0f} tokens/s"
    )
    return t_theirs / t_ours


def bench_loader(work: Path, steps: int = 30) -> float:
    tokenizer = work / "tok.json"
    domains = {
        "downstream": DomainSpec(str(work / "python-code.jsonl")),
        "upstream": DomainSpec(str(work / "python-docs.jsonl")),
    }
    data = DataConfig(
        dir=str(work / "data"),
        tokenizer=str(tokenizer),
        mixture={"downstream": 0.75, "upstream": 0.25},
        domains=domains,
        seq_len=128,
        micro_batch_size=16,
    )
    dm = CPTDataModule(data)
    dm.setup()
    batches = iter(dm.train_dataloader())
    next(batches)
    model = GPTNeoX(config_from_name("tiny"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    load_times, step_times = [], []
    for _ in range(steps):
        started = time.perf_counter()
        batch = next(batches)
        load_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        ids = batch["input_ids"]
        logits = model(ids[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        step_times.append(time.perf_counter() - started)
    load, step = statistics.median(load_times), statistics.median(step_times)
    print(
        f"mixture loader: {load * 1e3:.2f} ms/batch; training step of tiny (16 x 128): {step * 1e3:.1f} ms"
    )
    return 100 * load / step


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        speedup = bench_prepare(args.rounds, work)
        overhead = bench_loader(work)
    print(f"prepare_speedup={speedup:.2f} loader_overhead_pct={overhead:.2f}")


if __name__ == "__main__":
    main()
