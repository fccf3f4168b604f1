"""Corpora, tokenizer, token files and windows."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from cpt.data.prepare import DomainSpec, check_compatible, dataset_path, finalize, prepare_domain
from cpt.data.sources import SourceError
from cpt.data.tokenizer import train_bpe
from tests.helpers import SAMPLE_TEXTS, jsonl_lines, write_jsonl


def test_validation_documents_never_in_training(tmp_path, tokenizer):
    texts = [f"unique document {i} " + "word " * i for i in range(40)]
    source = write_jsonl(tmp_path / "c.jsonl", texts)
    prepared = prepare_domain(tmp_path / "data", DomainSpec(str(source), val_tokens=100), tokenizer)

    def docs(split):
        tokens, offsets = prepared.tokens(split), prepared.offsets(split)
        ends = list(offsets[1:]) + [len(tokens)]
        return {tokenizer.decode(tokens[s : e - 1].tolist()) for s, e in zip(offsets, ends)}

    val, train = docs("val"), docs("train")
    assert val and train and not val & train
    assert sum(prepared.meta["splits"][s]["tokens"] for s in ("train", "val")) > 100
    assert prepared.meta["splits"]["val"]["tokens"] >= 100
    # deterministic: another seed picks other documents, the same seed the same ones
    again = prepare_domain(tmp_path / "data2", DomainSpec(str(source), val_tokens=100), tokenizer)
    assert np.array_equal(again.tokens("val")[:], prepared.tokens("val")[:])
    other = prepare_domain(
        tmp_path / "data3", DomainSpec(str(source), val_tokens=100), tokenizer, seed=7
    )
    assert not np.array_equal(other.tokens("val")[:], prepared.tokens("val")[:])


def test_preparation_is_reused_and_rebuilt_when_source_changes(tmp_path, tokenizer):
    source = write_jsonl(tmp_path / "c.jsonl", [f"doc {i}" for i in range(10)])
    spec = DomainSpec(str(source), val_tokens=5)
    first = prepare_domain(tmp_path / "data", spec, tokenizer)
    stamp = (first.path / "train-00000.bin").stat().st_mtime_ns
    assert prepare_domain(tmp_path / "data", spec, tokenizer).path == first.path
    assert (first.path / "train-00000.bin").stat().st_mtime_ns == stamp
    write_jsonl(source, [f"changed doc {i}" for i in range(12)])
    second = prepare_domain(tmp_path / "data", spec, tokenizer)
    assert second.path != first.path and (first.path / "meta.json").is_file()
    assert not list((tmp_path / "data").glob(".*tmp*"))


def test_parts_prepared_apart_then_finalized(tmp_path, small_tokenizer):
    for i in range(4):
        (tmp_path / f"shard{i}.jsonl").write_text(
            jsonl_lines(SAMPLE_TEXTS[i * 7 : (i + 1) * 7 + (i == 3) * 2])
        )
    spec = DomainSpec(str(tmp_path / "shard*.jsonl"), val_tokens=40)
    small = {"shard_tokens": 100}
    with pytest.raises(SourceError, match="parts not prepared yet: part-00001"):
        prepare_domain(tmp_path / "data", spec, small_tokenizer, part=0, num_parts=2, **small)
        finalize(tmp_path / "data", spec, small_tokenizer, num_parts=2, **small)
    prepare_domain(tmp_path / "data", spec, small_tokenizer, part=1, num_parts=2, **small)
    with pytest.raises(SourceError, match="part-00000 was prepared with another num_parts"):
        finalize(tmp_path / "data", spec, small_tokenizer, num_parts=1, **small)
    whole = finalize(tmp_path / "data", spec, small_tokenizer, num_parts=2, **small)
    train, val = whole.tokens("train"), whole.tokens("val")
    assert len(train) + len(val) == sum(
        len(small_tokenizer.encode(t).ids) + 1 for t in SAMPLE_TEXTS
    )
    assert len(whole.meta["splits"]["train"]["shards"]) > 2  # bounded shards
    assert [p.name for p in (tmp_path / "data").iterdir()] == [whole.name]  # the parts are gone
    one = prepare_domain(tmp_path / "one", spec, small_tokenizer, **small)
    assert folder_bytes(whole.path) == folder_bytes(one.path)
    # a part's job run again after the dataset is finalized (a requeued array task) does nothing
    again = prepare_domain(tmp_path / "data", spec, small_tokenizer, part=0, num_parts=2, **small)
    assert again.path == whole.path and folder_bytes(again.path) == folder_bytes(one.path)


def folder_bytes(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@settings(max_examples=12, deadline=None)
@given(
    docs_per_file=st.lists(st.integers(0, 6), min_size=1, max_size=5),
    num_parts=st.integers(2, 7),
    max_docs=st.one_of(st.none(), st.integers(2, 12)),
    val_tokens=st.integers(1, 120),
)
def test_finalized_parts_equal_one_process_byte_for_byte(
    small_tokenizer, docs_per_file, num_parts, max_docs, val_tokens
):
    """Any split into parts, more parts than files (empty parts) and a document cap included."""
    assume(sum(docs_per_file) >= 2 and (max_docs is None or max_docs <= sum(docs_per_file)))
    texts = iter(SAMPLE_TEXTS * 2)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for i, count in enumerate(docs_per_file):
            (root / f"f{i}.jsonl").write_text(jsonl_lines([next(texts) for _ in range(count)]))
        spec = DomainSpec(str(root / "f*.jsonl"), val_tokens=val_tokens, max_docs=max_docs)
        small = {"shard_tokens": 64}
        one = prepare_domain(root / "one", spec, small_tokenizer, **small)
        for part in reversed(range(num_parts)):  # any order: each part is its own job
            prepare_domain(root / "parts", spec, small_tokenizer, "", 1, part, num_parts, **small)
        whole = finalize(root / "parts", spec, small_tokenizer, num_parts, **small)
        assert whole.name == one.name
        assert folder_bytes(whole.path) == folder_bytes(one.path)


def test_interrupted_preparation_leaves_nothing_and_keeps_earlier_output(tmp_path, small_tokenizer):
    source = tmp_path / "c.jsonl"
    source.write_text(jsonl_lines(SAMPLE_TEXTS))
    first = prepare_domain(tmp_path / "data", DomainSpec(str(source)), small_tokenizer)
    before = {p: p.read_bytes() for p in first.path.iterdir()}
    source.write_text(
        jsonl_lines(SAMPLE_TEXTS) + '{"text": "fine"}\n{broken\n'
    )  # a changed, corrupt source
    with pytest.raises(SourceError, match=r"c.jsonl:32: not valid JSON"):
        prepare_domain(tmp_path / "data", DomainSpec(str(source)), small_tokenizer)
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [first.path.name]
    assert {p: p.read_bytes() for p in first.path.iterdir()} == before


def test_token_files_of_another_tokenizer_are_refused(tmp_path, small_tokenizer):
    source = tmp_path / "c.jsonl"
    source.write_text(jsonl_lines(SAMPLE_TEXTS))
    prepared = prepare_domain(tmp_path / "data", DomainSpec(str(source)), small_tokenizer)
    other = train_bpe(SAMPLE_TEXTS, 280, tmp_path / "other.json")
    with pytest.raises(SourceError, match="built with another tokenizer"):
        check_compatible(prepared, other)


def test_two_workers_write_the_same_tokens_as_one(tmp_path, small_tokenizer):
    source = tmp_path / "c.jsonl"
    source.write_text(jsonl_lines(SAMPLE_TEXTS * 20))
    spec = DomainSpec(str(source), val_tokens=200)
    one = prepare_domain(tmp_path / "one", spec, small_tokenizer, workers=1)
    two = prepare_domain(tmp_path / "two", spec, small_tokenizer, workers=2)
    assert (
        dataset_path(tmp_path / "one", spec, small_tokenizer).name
        == dataset_path(tmp_path / "two", spec, small_tokenizer).name
    )
    for split in ("train", "val"):
        assert np.array_equal(one.tokens(split)[:], two.tokens(split)[:])
