"""Corpora, tokenizer, token files and windows."""

from __future__ import annotations

import gzip
import os

import pytest

from cpt.data.prepare import DomainSpec, prepare_domain
from cpt.data.sources import SourceError, SourceSpec, documents, fingerprint
from tests.helpers import SAMPLE_TEXTS, jsonl_lines, write_jsonl


def test_corrupt_json_line_names_file_and_line(tmp_path, tokenizer):
    source = tmp_path / "bad.jsonl"
    source.write_text('{"text": "fine"}\n{"text": broken\n')
    with pytest.raises(SourceError, match=r"bad.jsonl:2: not valid JSON"):
        prepare_domain(tmp_path / "data", DomainSpec(str(source)), tokenizer)
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").iterdir())


def test_missing_text_field(tmp_path, tokenizer):
    source = write_jsonl(tmp_path / "c.jsonl", ["a", "b"], field="content")
    with pytest.raises(SourceError, match=r"c.jsonl:1: no text field 'text'"):
        prepare_domain(tmp_path / "data", DomainSpec(str(source)), tokenizer)


def test_empty_corpus_and_missing_file(tmp_path, tokenizer):
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(SourceError, match="0 non-empty documents"):
        prepare_domain(tmp_path / "data", DomainSpec(str(tmp_path / "empty.jsonl")), tokenizer)
    with pytest.raises(SourceError, match="no such file"):
        prepare_domain(tmp_path / "data", DomainSpec(str(tmp_path / "nope.jsonl")), tokenizer)
    with pytest.raises(SourceError, match="unknown data source 'wikipedia'"):
        prepare_domain(tmp_path / "data", DomainSpec("wikipedia"), tokenizer)


def test_jsonl_gz_zst_parquet_text_and_globs_read_the_same_documents(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    (tmp_path / "a.jsonl").write_text(jsonl_lines(SAMPLE_TEXTS[:10]))
    with gzip.open(tmp_path / "b.jsonl.gz", "wt") as handle:
        handle.write(jsonl_lines(SAMPLE_TEXTS[10:20]))
    (tmp_path / "c.jsonl.zst").write_bytes(
        zstandard.ZstdCompressor().compress(jsonl_lines(SAMPLE_TEXTS[20:]).encode())
    )
    assert list(documents(SourceSpec(str(tmp_path / "*.jsonl*")))) == SAMPLE_TEXTS

    pq.write_table(pa.table({"content": SAMPLE_TEXTS}), tmp_path / "d.parquet")
    assert (
        list(documents(SourceSpec(str(tmp_path / "d.parquet"), text_field="content")))
        == SAMPLE_TEXTS
    )

    for i, text in enumerate(SAMPLE_TEXTS[:3]):
        (tmp_path / f"doc{i}.txt").write_text(text)
    assert list(documents(SourceSpec(str(tmp_path / "doc*.txt")))) == SAMPLE_TEXTS[:3]
    assert list(documents(SourceSpec(str(tmp_path / "*.jsonl*")), max_docs=4)) == SAMPLE_TEXTS[:4]


def test_hugging_face_dataset_folder(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict({"text": SAMPLE_TEXTS})}
    ).save_to_disk(str(tmp_path / "ds"))
    assert list(documents(SourceSpec(f"hf:{tmp_path / 'ds'}"))) == SAMPLE_TEXTS
    with pytest.raises(SourceError, match="no split 'validation'"):
        list(documents(SourceSpec(f"hf:{tmp_path / 'ds'}", split="validation")))
    with pytest.raises(SourceError, match="no text field 'body'"):
        list(documents(SourceSpec(f"hf:{tmp_path / 'ds'}", text_field="body")))


def test_unknown_format_and_missing_field(tmp_path, small_tokenizer):
    (tmp_path / "x.csv").write_text("text\nhello\n")
    with pytest.raises(SourceError, match=r"x.csv: unknown format"):
        prepare_domain(tmp_path / "d", DomainSpec(str(tmp_path / "*.csv")), small_tokenizer)
    with pytest.raises(SourceError, match="unknown data source 'x.csv.bak'"):
        prepare_domain(tmp_path / "d", DomainSpec("x.csv.bak"), small_tokenizer)
    (tmp_path / "c.jsonl").write_text(jsonl_lines(SAMPLE_TEXTS, field="body"))
    with pytest.raises(SourceError, match=r"c.jsonl:1: no text field 'text'"):
        prepare_domain(tmp_path / "d", DomainSpec(str(tmp_path / "c.jsonl")), small_tokenizer)
    assert not (tmp_path / "d").exists() or not any((tmp_path / "d").iterdir())


def test_the_fingerprint_follows_the_contents_not_the_folder_or_the_clock(
    tmp_path, small_tokenizer
):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(2):
        (corpus / f"part{i}.jsonl").write_text(jsonl_lines(SAMPLE_TEXTS[i * 10 : (i + 1) * 10]))
    spec = DomainSpec(str(corpus / "*.jsonl"), val_tokens=40)
    first, before = prepare_domain(tmp_path / "data", spec, small_tokenizer), fingerprint(spec)
    moved = tmp_path / "elsewhere" / "corpus"
    moved.parent.mkdir()
    corpus.rename(moved)
    for path in moved.iterdir():
        os.utime(path, (1, 1))  # re-synced: the same bytes, another time
    again = DomainSpec(str(moved / "*.jsonl"), val_tokens=40)
    assert fingerprint(again) == before
    assert prepare_domain(tmp_path / "data", again, small_tokenizer).path == first.path
    (moved / "part1.jsonl").write_text(jsonl_lines(SAMPLE_TEXTS[10:19]))  # one document less
    assert prepare_domain(tmp_path / "data", again, small_tokenizer).path != first.path
