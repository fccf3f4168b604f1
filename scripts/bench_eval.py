"""Benchmark of task evaluation: our lm-eval model (`HarnessLM`) against lm-eval's own `hf` model
on the same weights (exported to Hugging Face format), the same requests, in the same run.

    python scripts/bench_eval.py [--requests 800] [--rounds 3] [--model tiny]

The requests are lm-eval `loglikelihood` requests as a multiple-choice task makes them: a context
of a few lines of the standard library's source and a one-line continuation. Both sides score
them all, alternating (A B B A ...), on the same threads; the ratio is of the median times. The
model is the preset with random weights (the speed of scoring does not depend on them) and a
byte-level BPE tokenizer trained on the built-in corpora. Ends with one machine-readable line:
`case=loglikelihood requests_per_s_ratio=<ours / hf> requests_per_s=<ours> hf_requests_per_s=<hf>`.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM

from cpt.data.hf_tokenizer import write_tokenizer_files
from cpt.data.sources import SourceSpec, documents
from cpt.data.tokenizer import train_bpe
from cpt.models.hf import to_hf
from cpt.models.presets import config_from_name
from cpt.models.registry import build_model
from cpt.tasks.harness import HarnessLM


def requests(count: int, seed: int = 0) -> list[Instance]:
    """(context, continuation) pairs: a few lines of source, then the next line."""
    rng = random.Random(seed)
    lines = [line for doc in documents(SourceSpec("python-code")) for line in doc.splitlines()]
    made = []
    while len(made) < count:
        at = rng.randrange(4, len(lines) - 1)
        context, following = "\n".join(lines[at - rng.randint(2, 6) : at]), lines[at]
        if context.strip() and following.strip():
            made.append(
                Instance("loglikelihood", doc={}, arguments=(context + "\n", following), idx=0)
            )
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=800)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        texts = [d for name in ("python-docs", "python-code") for d in documents(SourceSpec(name))]
        tokenizer = train_bpe(texts, 4096, Path(tmp) / "tokenizer.json")
        model = build_model(config_from_name(args.model)).eval()
        folder = to_hf(model, Path(tmp) / "hf")
        write_tokenizer_files(
            Path(tmp) / "tokenizer.json", folder, model.config.max_position_embeddings
        )
        ours = HarnessLM(model, tokenizer, batch_size=args.batch)
        theirs = HFLM(pretrained=str(folder), device="cpu", batch_size=args.batch)
        work = requests(args.requests)
        sides = {"ours": ours, "hf": theirs}
        times: dict[str, list[float]] = {"ours": [], "hf": []}
        for round_ in range(args.rounds):
            order = ["ours", "hf"] if round_ % 2 == 0 else ["hf", "ours"]
            for side in order:
                started = time.perf_counter()
                scores = sides[side].loglikelihood(work, disable_tqdm=True)
                times[side].append(time.perf_counter() - started)
                assert len(scores) == len(work)
            print(f"round {round_}: " + ", ".join(f"{s} {times[s][-1]:.2f} s" for s in times))
    rate = {side: len(work) / statistics.median(t) for side, t in times.items()}
    print(
        f"case=loglikelihood requests_per_s_ratio={rate['ours'] / rate['hf']:.2f} "
        f"requests_per_s={rate['ours']:.1f} hf_requests_per_s={rate['hf']:.1f}"
    )


if __name__ == "__main__":
    main()
