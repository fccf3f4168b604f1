"""Whole runs on Megatron indexed datasets written by megatron-core: the tokens trained and
validated on are the index's, and Pythia's step ranges give exactly their sequences."""

from __future__ import annotations

import lightning as L
import numpy as np

from cpt.data.sources import SourceSpec, documents
from cpt.data.tokenizer import eod_id, train_bpe
from cpt.run.build import build
from cpt.train import run
from tests.helpers import megatron_documents, write_megatron


class Recorded(L.Callback):
    """Every training row (source, window, tokens) and the datamodule the run used."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, int, list[int]]] = []
        self.data = None

    def on_train_start(self, trainer, pl_module) -> None:
        self.data = trainer.datamodule

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        names = trainer.datamodule.mixture.names
        for source, window, ids in zip(
            batch["source"].tolist(), batch["window"].tolist(), batch["input_ids"].tolist()
        ):
            self.rows.append((names[source], window, ids))


def tokenizer_file(tmp_path):
    texts = list(documents(SourceSpec("python-docs"), max_docs=60))
    path = tmp_path / "tokenizer.json"
    return train_bpe(texts, 400, path), path


def stream(docs: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(docs) if docs else np.empty(0, dtype=np.int64)


def test_a_megatron_corpus_trains_and_validates_on_the_index_tokens(tiny_run, tmp_path):
    tokenizer, path = tokenizer_file(tmp_path)
    eod = eod_id(tokenizer)
    texts = list(documents(SourceSpec("package-docs"), max_docs=30))
    prefix = write_megatron(
        tmp_path / "corpus" / "text_document",
        [[tokenizer.encode(t).ids + [eod]] for t in texts],
    )
    cfg = tiny_run(
        f"data.tokenizer={path}",
        f"data.domains.downstream.source=megatron:{prefix}",
        "data.domains.downstream.max_docs=null",
        "data.train=downstream",
        "trainer.max_steps=3",
    )
    built, seen = build(cfg), Recorded()
    built.callbacks.append(seen)
    summary = run(cfg, built)
    assert all(np.isfinite(v) for v in summary["final_val_loss"].values())
    prepared = seen.data.prepared["downstream"]
    reference = megatron_documents(prefix)  # megatron-core's own reader
    val_docs = {tuple(d) for d in split_docs(prepared, "val")}
    train_stream = stream([d for d in reference if tuple(d.tolist()) not in val_docs])
    val_stream = stream([d for d in reference if tuple(d.tolist()) in val_docs])
    assert val_docs and len(train_stream) + len(val_stream) == sum(map(len, reference))
    seq = cfg.data.seq_len
    rows = [r for r in seen.rows if r[0] == "downstream"]
    assert len(rows) == 3 * cfg.data.micro_batch_size
    for _, window, ids in rows:  # every trained window is the index's tokens at its place
        assert ids == train_stream[window * seq : window * seq + seq + 1].tolist()
    val = seen.data._windows("downstream", "val")
    for k in range(len(val)):
        assert val[k]["input_ids"].tolist() == val_stream[k * seq : k * seq + seq + 1].tolist()


def split_docs(prepared, split):
    tokens, offsets = np.asarray(prepared.tokens(split)[:]), prepared.offsets(split)
    ends = [*offsets[1:], len(tokens)]
    return [tokens[a:b].tolist() for a, b in zip(offsets, ends)]


def test_pythia_steps_draw_exactly_the_sequences_of_those_steps(tiny_run, tmp_path):
    """Batch 4, sequences of 17 tokens, steps [3, 6): the 12 windows are sequences 12..23."""
    tokenizer, path = tokenizer_file(tmp_path)
    eod = eod_id(tokenizer)
    rng = np.random.default_rng(0)
    seqs = rng.integers(eod + 1, tokenizer.get_vocab_size(), (40, 17))
    seqs[:, 5] = eod
    prefix = write_megatron(tmp_path / "pythia" / "document", [[list(s)] for s in seqs])
    cfg = tiny_run(
        f"data.tokenizer={path}",
        f"data.domains.upstream.source=megatron:{prefix}",
        "data.domains.upstream.max_docs=null",
        "data.domains.upstream.steps={start: 3, stop: 6, batch_size: 4, seq_len: 16}",
        "data.domains.upstream.val_tokens=34",
        "data.seq_len=16",
        "data.micro_batch_size=4",
        "data.train=upstream",
        "trainer.max_steps=3",
    )
    built, seen = build(cfg), Recorded()
    built.callbacks.append(seen)
    summary = run(cfg, built)
    assert all(np.isfinite(v) for v in summary["final_val_loss"].values())
    drawn = sorted((w, ids) for name, w, ids in seen.rows if name == "upstream")
    assert [w for w, _ in drawn] == list(range(12))  # one epoch of the steps: each once
    assert [ids for _, ids in drawn] == seqs[12:24].tolist()
    val = seen.data._windows("upstream", "val")
    assert [val[k]["input_ids"].tolist() for k in range(len(val))] == seqs[24:26].tolist()
