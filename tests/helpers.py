"""What several test files share: test-only callbacks (named by `_target_` in a test's overrides,
also in child processes), the command line of a small CPU run, readers of a run's files, and small
corpora, models and tables to test with."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from cpt.checkpoints.files import read_lightning_checkpoint
from tests.conftest import SMALL_DATA

REPO = Path(__file__).resolve().parents[1]


def cli(out: Path, data_dir: Path, *overrides: str) -> list[str]:
    """`python -m cpt.train` on the small data, writing to `out`."""
    if not any(o.startswith("data.micro_batch_size=") for o in overrides):
        overrides = ("data.micro_batch_size=4", *overrides)
    return [
        sys.executable,
        "-m",
        "cpt.train",
        "logger=csv",
        f"data.dir={data_dir}",
        *SMALL_DATA,
        "trainer.enable_progress_bar=false",
        "trainer.log_every_n_steps=1",
        f"hydra.run.dir={out}",
        *overrides,
    ]


def start(out: Path, data_dir: Path, *overrides: str) -> subprocess.Popen:
    """`cli(...)` started in the background, one thread per process (several share 2 cores)."""
    return subprocess.Popen(
        cli(out, data_dir, *overrides),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def finish(process: subprocess.Popen, out: Path) -> dict:
    """Wait for a started run; it must succeed. Its `summary.json`."""
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]
    return json.loads((out / "summary.json").read_text())


def train(out: Path, data_dir: Path, *overrides: str) -> dict:
    """A run of `python -m cpt.train` to the end; its `summary.json`."""
    return finish(start(out, data_dir, *overrides), out)


class NaNOnRank(L.Callback):
    """The first block of one rank outputs NaN for one optimizer step: a non-finite loss there."""

    def __init__(self, rank: int = 1, step: int = 1) -> None:
        self.rank, self.step, self._hook = rank, step, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_rank == self.rank and trainer.global_step == self.step and not self._hook:
            block = pl_module.model.layers[0]
            self._hook = block.register_forward_hook(lambda m, i, out: out * torch.nan)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._hook is not None and trainer.global_step > self.step:
            self._hook.remove()
            self._hook = None


# ---- reading and writing the files of small runs and corpora ----
def metric(out: str, key: str) -> list[tuple[int, float]]:
    with (Path(out) / "metrics.csv").open() as handle:
        return [(int(r["step"]), float(r[key])) for r in csv.DictReader(handle) if r.get(key)]


def adam(checkpoint: Path) -> dict:
    return read_lightning_checkpoint(checkpoint)["optimizer_states"][0]["state"]


def write_jsonl(path, texts, field="text"):
    path.write_text("".join(json.dumps({field: t}) + "\n" for t in texts))
    return path


def jsonl_lines(texts, field="text"):
    return "".join(json.dumps({field: t, "id": i}) + "\n" for i, t in enumerate(texts))


SAMPLE_TEXTS = [f"document {i}: " + "the quick brown fox " * (i % 5 + 1) for i in range(30)]


# ---- test data for the models and the analysis ----
def random_llama(
    kind: str = "llama", tied: bool = False, scaling: dict | None = None, seed: int = 0
):
    import transformers

    torch.manual_seed(seed)
    common = dict(
        vocab_size=97,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=96,
        max_position_embeddings=128,
        tie_word_embeddings=tied,
    )
    if kind == "qwen2":
        model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**common))
    else:
        extra = (
            {"rope_parameters": {"rope_type": "llama3", "rope_theta": 10000.0, **scaling}}
            if scaling
            else {}
        )
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**common, **extra))
    with torch.no_grad():  # make norms and biases matter too
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def seed_runs(values: dict[float, list[float]], failed: int = 1) -> Any:
    """A runs table of replay fractions x seeds (and `failed` failed runs), as collect writes it."""
    import pandas as pd

    rows = []
    for fraction, losses in values.items():
        for seed, loss in enumerate(losses):
            rows.append(
                {
                    "run": f"{len(rows)}_fraction={fraction},seed={seed}",
                    "status": "finished",
                    "callbacks.replay.fraction": fraction,
                    "seed": seed,
                    "final/val/upstream/loss": loss,
                    "final/val/downstream/loss": 5 - loss,
                    "steps": 10,
                }
            )
    rows += [
        {"run": f"x{i}", "status": "failed", "callbacks.replay.fraction": 0.5, "seed": 9}
        for i in range(failed)
    ]
    return pd.DataFrame(rows)


class Slow(L.Callback):
    """Each training step takes at least `seconds` (a test can signal a run in the middle)."""

    def __init__(self, seconds: float = 0.2) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        time.sleep(self.seconds)


# ---- Megatron indexed datasets, written by the format's reference writer (megatron-core) ----
def write_megatron(prefix: Path, documents: list[list[list[int]]], dtype: Any = np.uint16) -> Path:
    """`documents`: each a list of sequences of token ids; returns the prefix."""
    import torch
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    prefix.parent.mkdir(parents=True, exist_ok=True)
    builder = IndexedDatasetBuilder(f"{prefix}.bin", dtype=dtype)
    for sequences in documents:
        flat = [t for seq in sequences for t in seq]
        builder.add_document(torch.tensor(flat, dtype=torch.int64), [len(s) for s in sequences])
    builder.finalize(f"{prefix}.idx")
    return prefix


def megatron_documents(prefix: Path) -> list[np.ndarray]:
    """Every document's tokens as megatron-core's own reader gives them."""
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    dataset = IndexedDataset(str(prefix))
    bounds = dataset.document_indices
    return [
        np.concatenate([dataset[s] for s in range(bounds[d], bounds[d + 1])] or [np.empty(0)])
        for d in range(len(bounds) - 1)
    ]


def llama_style_tokenizer(folder: Path, texts: list[str], style: str = "llama3") -> Path:
    """A byte-level BPE with Llama's special tokens, trained offline, in `folder`: `llama3` puts
    `<|begin_of_text|>` before every text by its post-processor (as Llama 3's tokenizer.json does);
    `llama2` has `<s>`/`</s>` and says `add_bos_token: true` in a tokenizer_config.json beside it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    bos, eos = ("<|begin_of_text|>", "<|end_of_text|>") if style == "llama3" else ("<s>", "</s>")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=[bos, eos],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    folder.mkdir(parents=True, exist_ok=True)
    if style == "llama3":
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, 0)]
        )
    else:
        config = {"add_bos_token": True, "bos_token": bos, "eos_token": eos}
        (folder / "tokenizer_config.json").write_text(json.dumps(config))
    tokenizer.save(str(folder / "tokenizer.json"))
    return folder / "tokenizer.json"
