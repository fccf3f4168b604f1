"""Megatron indexed datasets as a source: written by megatron-core's builder, read in place."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cpt.data.config import DataConfig
from cpt.data.megatron import PythiaSteps
from cpt.data.prepare import DomainSpec, prepare_domain
from cpt.data.sources import SourceError
from cpt.data.tokenizer import eod_id
from cpt.data.windows import TokenWindows
from tests.helpers import SAMPLE_TEXTS, megatron_documents, write_megatron


def encoded(tokenizer, texts):
    eod = eod_id(tokenizer)
    return [tokenizer.encode(t).ids + [eod] for t in texts]


def split_documents(prepared, split):
    tokens, offsets = np.asarray(prepared.tokens(split)[:]), prepared.offsets(split)
    ends = [*offsets[1:], len(tokens)]
    return [tokens[a:b] for a, b in zip(offsets, ends)]


@pytest.mark.parametrize("dtype", [np.uint16, np.int32])
def test_documents_are_the_index_documents_read_in_place(tmp_path, small_tokenizer, dtype):
    docs = encoded(small_tokenizer, SAMPLE_TEXTS)
    # some documents in two sequences, as a sentence-split writer stores them
    layout = [[d[:3], d[3:]] if i % 3 == 0 else [d] for i, d in enumerate(docs)]
    prefix = write_megatron(tmp_path / "corpus" / "text_document", layout, dtype)
    spec = DomainSpec(f"megatron:{prefix}", val_tokens=60)
    prepared = prepare_domain(tmp_path / "data", spec, small_tokenizer)
    reference = megatron_documents(prefix)
    assert [d.tolist() for d in reference] == docs
    train, val = split_documents(prepared, "train"), split_documents(prepared, "val")
    assert val and len(train) + len(val) == len(reference)
    # each split holds its documents in the index's order, every one exactly once
    order = {tuple(d.tolist()): i for i, d in enumerate(reference)}
    for split in (train, val):
        positions = [order[tuple(d.tolist())] for d in split]
        assert positions == sorted(positions)
    assert {tuple(d.tolist()) for d in train + val} == set(order)
    assert sum(len(d) for d in val) >= 60
    # nothing copied: the prepared folder holds the split records only
    assert not list(prepared.path.glob("*.bin"))
    assert sum(p.stat().st_size for p in prepared.path.iterdir()) < 4096
    assert prepared.tokens("train").arrays[0].base is not None  # a view of the .bin's map
    # the same held-out rule as for raw text: the same documents held out as a jsonl would be
    texts = tmp_path / "c.jsonl"
    from tests.helpers import write_jsonl

    write_jsonl(texts, SAMPLE_TEXTS)
    raw = prepare_domain(tmp_path / "raw", DomainSpec(str(texts), val_tokens=60), small_tokenizer)
    assert np.array_equal(raw.tokens("val")[:], prepared.tokens("val")[:])
    assert np.array_equal(raw.tokens("train")[:], prepared.tokens("train")[:])


@settings(max_examples=15, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 40), min_size=2, max_size=30),
    val_tokens=st.integers(1, 200),
    max_docs=st.one_of(st.none(), st.integers(2, 30)),
)
def test_splits_partition_the_documents(small_tokenizer, lengths, val_tokens, max_docs):
    eod = eod_id(small_tokenizer)
    rng = np.random.default_rng(len(lengths))
    vocab = small_tokenizer.get_vocab_size(with_added_tokens=True)
    docs = [[*map(int, rng.integers(eod + 1, vocab, n - 1)), eod] for n in lengths]
    with tempfile.TemporaryDirectory() as tmp:
        prefix = write_megatron(Path(tmp) / "d", [[d] for d in docs])
        spec = DomainSpec(f"megatron:{prefix}", val_tokens=val_tokens, max_docs=max_docs)
        prepared = prepare_domain(Path(tmp) / "data", spec, small_tokenizer)
        kept = docs[:max_docs] if max_docs else docs
        got = split_documents(prepared, "train") + split_documents(prepared, "val")
        assert sorted(map(tuple, got)) == sorted(tuple(d) for d in kept)
        meta = prepared.meta["splits"]
        assert meta["train"]["tokens"] + meta["val"]["tokens"] == sum(map(len, kept))
        assert meta["train"]["documents"] >= 1 and meta["val"]["documents"] >= 1


def test_a_file_from_another_tokenizer_is_one_line(tmp_path, small_tokenizer):
    eod = eod_id(small_tokenizer)
    vocab = small_tokenizer.get_vocab_size(with_added_tokens=True)
    big = write_megatron(tmp_path / "big", [[[5, vocab + 7, eod]], [[6, eod]]])
    with pytest.raises(SourceError, match=f"token id {vocab + 7} is outside the run tokenizer"):
        prepare_domain(tmp_path / "data", DomainSpec(f"megatron:{big}"), small_tokenizer)
    no_eod = write_megatron(tmp_path / "noeod", [[[5, 6, 7]], [[8, 9]]])
    with pytest.raises(SourceError, match=rf"no end-of-document token {eod} \("):
        prepare_domain(tmp_path / "data", DomainSpec(f"megatron:{no_eod}"), small_tokenizer)
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").iterdir())


def test_a_broken_pair_is_one_line(tmp_path, small_tokenizer):
    eod = eod_id(small_tokenizer)
    prefix = write_megatron(tmp_path / "d", [[[5, eod]], [[6, 7, eod]]])
    spec = DomainSpec(f"megatron:{tmp_path / 'nosuch'}")
    with pytest.raises(SourceError, match="no file .*nosuch.idx; expected the .bin/.idx pair"):
        prepare_domain(tmp_path / "data", spec, small_tokenizer)
    other = write_megatron(tmp_path / "other", [[[5, 6, 7, 8, 9, 10, eod]]])
    (tmp_path / "d.bin").write_bytes((tmp_path / "other.bin").read_bytes())
    with pytest.raises(SourceError, match="the pair does not belong together"):
        prepare_domain(tmp_path / "data", DomainSpec(f"megatron:{prefix}"), small_tokenizer)
    (tmp_path / "other.idx").write_bytes(b"not an index at all, really not")
    with pytest.raises(SourceError, match="not a Megatron index"):
        prepare_domain(tmp_path / "data", DomainSpec(f"megatron:{other}"), small_tokenizer)


def pythia_layout(tmp_path, tokenizer, sequences: int, width: int):
    """A pre-shuffled file: sequence k holds `width` tokens, packed documents ending in EOD."""
    eod = eod_id(tokenizer)
    rng = np.random.default_rng(0)
    seqs = rng.integers(eod + 1, tokenizer.get_vocab_size(), (sequences, width))
    seqs[:, 3] = eod  # documents end inside sequences
    return write_megatron(tmp_path / "pythia" / "document", [[list(s)] for s in seqs]), seqs


def test_pythia_steps_train_on_exactly_the_sequences_of_those_steps(tmp_path, small_tokenizer):
    prefix, seqs = pythia_layout(tmp_path, small_tokenizer, 40, 9)
    steps = PythiaSteps(start=2, stop=5, batch_size=4, seq_len=8)
    spec = DomainSpec(f"megatron:{prefix}", val_tokens=20, steps=steps)
    prepared = prepare_domain(tmp_path / "data", spec, small_tokenizer)
    train = TokenWindows(prepared.tokens("train"), 8, stride=prepared.window_stride)
    val = TokenWindows(prepared.tokens("val"), 8, stride=prepared.window_stride)
    assert len(train) == (5 - 2) * 4 and len(val) == 3  # ceil(20 / 9) sequences after the steps
    for k in range(len(train)):  # window k: sequence 2 * 4 + k, all of its 9 tokens
        assert train[k]["input_ids"].tolist() == seqs[8 + k].tolist()
    assert [val[k]["input_ids"].tolist() for k in range(3)] == seqs[20:23].tolist()
    # the sequences are the documents for position ids: positions restart in every window
    aware = TokenWindows(prepared.tokens("train"), 8, prepared.offsets("train"), True, 9)
    assert aware[5]["position_ids"].tolist() == list(range(8))


def test_pythia_steps_bad_input_is_one_line(tmp_path, small_tokenizer):
    prefix, _ = pythia_layout(tmp_path, small_tokenizer, 20, 9)
    far = DomainSpec(f"megatron:{prefix}", val_tokens=9, steps=PythiaSteps(3, 5, 4, 8))
    with pytest.raises(SourceError, match=r"need 21 sequences; the file has 20"):
        prepare_domain(tmp_path / "data", far, small_tokenizer)
    wrong = DomainSpec(f"megatron:{prefix}", val_tokens=9, steps=PythiaSteps(0, 2, 4, 16))
    with pytest.raises(SourceError, match="has 9 tokens; expected steps.seq_len \\+ 1 = 17"):
        prepare_domain(tmp_path / "data", wrong, small_tokenizer)
    with pytest.raises(ValueError, match="steps: expected 0 <= start < stop"):
        PythiaSteps(5, 5)
    with pytest.raises(
        ValueError, match="steps: expected 0 <= start < stop, got start=None stop=4"
    ):
        PythiaSteps(stop=4)
    with pytest.raises(ValueError, match="expected source megatron:<prefix>, got 'python-docs'"):
        DomainSpec("python-docs", steps={"start": 0, "stop": 1})
    with pytest.raises(ValueError, match="steps.seq_len: 2048, but data.seq_len is 128"):
        DataConfig(
            tokenizer="x",
            train="up",
            domains={"up": DomainSpec(f"megatron:{prefix}", steps={"start": 0, "stop": 1})},
        )
