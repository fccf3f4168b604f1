"""Corpora, tokenizer, token files and windows."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cpt.data.corpora import python_code
from cpt.data.prepare import DomainSpec, prepare_domain
from cpt.data.sources import SourceError, SourceSpec, documents
from cpt.data.tokenizer import TokenizerError, eod_id, load_tokenizer, train_bpe
from cpt.data.windows import TokenWindows


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    texts = list(documents(SourceSpec("python-docs"), max_docs=60))
    return train_bpe(texts, 400, tmp_path_factory.mktemp("tok") / "tokenizer.json")


def write_jsonl(path, texts, field="text"):
    path.write_text("".join(json.dumps({field: t}) + "\n" for t in texts))
    return path


def test_builtin_corpora_are_prose_and_code():
    docs = list(documents(SourceSpec("python-docs"), max_docs=100))
    code = list(documents(SourceSpec("python-code"), max_docs=100))
    assert len(docs) == len(code) == 100
    assert any("def " in c for c in code) and not any(d.lstrip().startswith("def ") for d in docs)
    # the docstrings are the prose domain: blanked out of the code domain
    dedent_doc = "Remove any common leading whitespace from every line"
    assert any(dedent_doc in d for d in documents(SourceSpec("python-docs")))
    assert not any(dedent_doc in c for c in python_code())


def test_package_docs_is_other_prose_from_the_installed_packages():
    """The weak shift's corpora: the same kind of text as python-docs from other modules."""
    from cpt.data.corpora import PACKAGES, package_files, stdlib_files

    files = package_files()
    assert not {"tests", "testing", "_vendor"} & {part for f in files for part in f.parts}
    assert not set(files) & set(stdlib_files())
    docs = list(documents(SourceSpec("package-docs"), max_docs=200))
    assert len(docs) == 200 and not any(d.lstrip().startswith(("def ", "import ")) for d in docs)
    heads = {d.split(".", 1)[0].split("\n", 1)[0] for d in docs}
    assert heads <= set(PACKAGES) and "torch" in heads  # each document: one module's docstrings
    assert any("tensor" in d.lower() for d in docs)


def test_round_trip_tokens_file_windows(tmp_path, tokenizer):
    texts = [f"document number {i}: " + "lorem ipsum dolor " * (i % 7 + 1) for i in range(50)]
    source = write_jsonl(tmp_path / "c.jsonl", texts)
    prepared = prepare_domain(tmp_path / "data", DomainSpec(str(source), val_tokens=60), tokenizer)
    eod = eod_id(tokenizer)
    # every split decodes back to its documents, each followed by the EOD token
    seen = []
    for split in ("train", "val"):
        tokens, offsets = prepared.tokens(split), prepared.offsets(split)
        assert prepared.meta["dtype"] == "uint16" and tokens.dtype == np.uint16
        ends = list(offsets[1:]) + [len(tokens)]
        for start, end in zip(offsets, ends):
            assert tokens[end - 1] == eod
            seen.append(tokenizer.decode(tokens[start : end - 1].tolist()))
    assert sorted(seen) == sorted(texts)
    # windows of seq_len + 1 overlap by exactly one token and tile the stream
    train = prepared.tokens("train")
    windows = TokenWindows(train, seq_len=16)
    assert len(windows) == (len(train) - 1) // 16
    ids = [windows[i]["input_ids"].numpy() for i in range(len(windows))]
    stitched = np.concatenate([ids[0]] + [w[1:] for w in ids[1:]])
    assert np.array_equal(stitched, train[: len(stitched)])
    assert ids[3][0] == ids[2][-1]


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


def test_tokenizer_loading_errors(tmp_path):
    with pytest.raises(TokenizerError, match="no such file"):
        load_tokenizer(str(tmp_path / "missing.json"))
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(TokenizerError, match="not a tokenizer.json"):
        load_tokenizer(str(tmp_path / "bad.json"))


def test_trained_tokenizer_round_trips_text(tokenizer, tmp_path):
    text = "Return a list of the words in the string, using sep as the delimiter."
    assert tokenizer.decode(tokenizer.encode(text).ids) == text
    assert eod_id(tokenizer) == 0 and tokenizer.get_vocab_size() <= 400
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    loaded = load_tokenizer(str(tmp_path))  # a folder holding tokenizer.json
    assert loaded.encode(text).ids == tokenizer.encode(text).ids
