"""Sources of every format, preparation in parts, atomicity and the bad inputs of the data path."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from cpt.data.prepare import DomainSpec, check_compatible, dataset_path, finalize, prepare_domain
from cpt.data.sources import SourceError, SourceSpec, documents
from cpt.data.tokenizer import train_bpe

TEXTS = [f"document {i}: " + "the quick brown fox " * (i % 5 + 1) for i in range(30)]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return train_bpe(TEXTS * 3, 300, tmp_path_factory.mktemp("tok") / "t.json")


def lines(texts, field="text"):
    return "".join(json.dumps({field: t, "id": i}) + "\n" for i, t in enumerate(texts))


def test_jsonl_gz_zst_parquet_text_and_globs_read_the_same_documents(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    (tmp_path / "a.jsonl").write_text(lines(TEXTS[:10]))
    with gzip.open(tmp_path / "b.jsonl.gz", "wt") as handle:
        handle.write(lines(TEXTS[10:20]))
    (tmp_path / "c.jsonl.zst").write_bytes(
        zstandard.ZstdCompressor().compress(lines(TEXTS[20:]).encode())
    )
    assert list(documents(SourceSpec(str(tmp_path / "*.jsonl*")))) == TEXTS

    pq.write_table(pa.table({"content": TEXTS}), tmp_path / "d.parquet")
    assert list(documents(SourceSpec(str(tmp_path / "d.parquet"), text_field="content"))) == TEXTS

    for i, text in enumerate(TEXTS[:3]):
        (tmp_path / f"doc{i}.txt").write_text(text)
    assert list(documents(SourceSpec(str(tmp_path / "doc*.txt")))) == TEXTS[:3]
    assert list(documents(SourceSpec(str(tmp_path / "*.jsonl*")), max_docs=4)) == TEXTS[:4]


def test_hugging_face_dataset_folder(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": TEXTS})}).save_to_disk(
        str(tmp_path / "ds")
    )
    assert list(documents(SourceSpec(f"hf:{tmp_path / 'ds'}"))) == TEXTS
    with pytest.raises(SourceError, match="no split 'validation'"):
        list(documents(SourceSpec(f"hf:{tmp_path / 'ds'}", split="validation")))
    with pytest.raises(SourceError, match="no text field 'body'"):
        list(documents(SourceSpec(f"hf:{tmp_path / 'ds'}", text_field="body")))


def test_parts_prepared_apart_then_finalized(tmp_path, tokenizer):
    for i in range(4):
        (tmp_path / f"shard{i}.jsonl").write_text(lines(TEXTS[i * 7 : (i + 1) * 7 + (i == 3) * 2]))
    spec = DomainSpec(str(tmp_path / "shard*.jsonl"), val_tokens=40)
    small = {"shard_tokens": 100}
    with pytest.raises(SourceError, match="parts not prepared yet: part-00001"):
        prepare_domain(tmp_path / "data", spec, tokenizer, part=0, num_parts=2, **small)
        finalize(tmp_path / "data", spec, tokenizer, num_parts=2, **small)
    prepare_domain(tmp_path / "data", spec, tokenizer, part=1, num_parts=2, **small)
    whole = finalize(tmp_path / "data", spec, tokenizer, num_parts=2, **small)
    assert whole.meta["parts"] == 2
    train, val = whole.tokens("train"), whole.tokens("val")
    assert len(train) + len(val) == sum(len(tokenizer.encode(t).ids) + 1 for t in TEXTS)
    assert len(whole.meta["splits"]["train"]["shards"]) > 2  # bounded shards, across both parts
    offsets = whole.offsets("train")
    assert offsets[0] == 0 and np.all(np.diff(offsets) > 0) and offsets[-1] < len(train)
    eod = whole.meta["eod_id"]
    assert all(train[int(o) - 1] == eod for o in offsets[1:])  # every document ends with EOD


def test_interrupted_preparation_leaves_nothing_and_keeps_earlier_output(tmp_path, tokenizer):
    source = tmp_path / "c.jsonl"
    source.write_text(lines(TEXTS))
    first = prepare_domain(tmp_path / "data", DomainSpec(str(source)), tokenizer)
    before = {p: p.read_bytes() for p in first.path.iterdir()}
    source.write_text(lines(TEXTS) + '{"text": "fine"}\n{broken\n')  # a changed, corrupt source
    with pytest.raises(SourceError, match=r"c.jsonl:32: not valid JSON"):
        prepare_domain(tmp_path / "data", DomainSpec(str(source)), tokenizer)
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [first.path.name]
    assert {p: p.read_bytes() for p in first.path.iterdir()} == before


def test_token_files_of_another_tokenizer_are_refused(tmp_path, tokenizer):
    source = tmp_path / "c.jsonl"
    source.write_text(lines(TEXTS))
    prepared = prepare_domain(tmp_path / "data", DomainSpec(str(source)), tokenizer)
    other = train_bpe(TEXTS, 280, tmp_path / "other.json")
    with pytest.raises(SourceError, match="built with another tokenizer"):
        check_compatible(prepared, other)


def test_unknown_format_and_missing_field(tmp_path, tokenizer):
    (tmp_path / "x.csv").write_text("text\nhello\n")
    with pytest.raises(SourceError, match=r"x.csv: unknown format"):
        prepare_domain(tmp_path / "d", DomainSpec(str(tmp_path / "*.csv")), tokenizer)
    with pytest.raises(SourceError, match="unknown data source 'x.csv.bak'"):
        prepare_domain(tmp_path / "d", DomainSpec("x.csv.bak"), tokenizer)
    (tmp_path / "c.jsonl").write_text(lines(TEXTS, field="body"))
    with pytest.raises(SourceError, match=r"c.jsonl:1: no text field 'text'"):
        prepare_domain(tmp_path / "d", DomainSpec(str(tmp_path / "c.jsonl")), tokenizer)
    assert not (tmp_path / "d").exists() or not any((tmp_path / "d").iterdir())


def test_two_workers_write_the_same_tokens_as_one(tmp_path, tokenizer):
    source = tmp_path / "c.jsonl"
    source.write_text(lines(TEXTS * 20))
    spec = DomainSpec(str(source), val_tokens=200)
    one = prepare_domain(tmp_path / "one", spec, tokenizer, workers=1)
    two = prepare_domain(tmp_path / "two", spec, tokenizer, workers=2)
    assert (
        dataset_path(tmp_path / "one", spec, tokenizer).name
        == dataset_path(tmp_path / "two", spec, tokenizer).name
    )
    for split in ("train", "val"):
        assert np.array_equal(one.tokens(split)[:], two.tokens(split)[:])
