"""Where documents come from, in a fixed order: built-in corpora, files, Hugging Face datasets.

A source is named by one string:
- `python-docs` / `python-code` / `package-docs`: the built-in corpora (`cpt.data.corpora`);
- a path or glob of files: `.jsonl` / `.json` (plain, `.gz` or `.zst`), `.parquet`, `.txt` / `.md`
  (one document per file); JSON and parquet documents are read from the `text_field`;
- `hf:<hub name or saved folder>`: a Hugging Face `datasets` dataset (`hf_config`, `split`,
  `streaming` for large ones), loaded only when a config names one;
- `megatron:<path prefix>`: a Megatron indexed dataset (`.bin` + `.idx`), already tokenized and
  read in place (`cpt.data.megatron`).
A source can be split into independent parts (by file, or by dataset shard) for preparation on
several machines.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import io
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path

from cpt.data.corpora import package_docs, package_files, python_code, python_docs, stdlib_files
from cpt.data.digests import file_digests
from cpt.errors import UserError

BUILTIN = {"python-docs": python_docs, "python-code": python_code, "package-docs": package_docs}
BUILTIN_FILES = {
    "python-docs": stdlib_files,
    "python-code": stdlib_files,
    "package-docs": package_files,
}
JSON_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".jsonl.zst", ".json.zst")
TEXT_SUFFIXES = (".txt", ".md")
FILE_SUFFIXES = (*JSON_SUFFIXES, ".parquet", *TEXT_SUFFIXES)


class SourceError(UserError, ValueError):
    """A data source that cannot be read: unknown name, missing file, corrupt line, no text."""


@dataclass
class SourceSpec:
    """Where a domain's documents come from (the first fields of `data.domains.<name>`)."""

    source: str  # python-docs | python-code | package-docs | files or a glob | hf:<dataset> | megatron:<prefix> | a prepared folder
    text_field: str = "text"
    hf_config: str | None = None
    split: str = "train"
    streaming: bool = False

    @property
    def kind(self) -> str:
        if self.source in BUILTIN:
            return "builtin"
        if self.source.startswith("hf:"):
            return "hf"
        if self.source.startswith("megatron:"):
            return "megatron"
        return "files"


def resolve_files(pattern: str) -> list[Path]:
    """The files a path or glob names, sorted; each must have a known format."""
    paths = sorted(Path(p) for p in glob.glob(str(Path(pattern).expanduser()), recursive=True))
    paths = [p for p in paths if p.is_file()]
    if not paths:
        raise SourceError(f"{pattern}: no such file; expected a file or a glob matching some")
    for path in paths:
        if not path.name.endswith(FILE_SUFFIXES):
            raise SourceError(f"{path}: unknown format; expected one of {', '.join(FILE_SUFFIXES)}")
    return paths


def _open_text(path: Path) -> io.TextIOBase:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    if path.name.endswith(".zst"):
        import zstandard

        raw = zstandard.ZstdDecompressor().stream_reader(path.open("rb"))
        return io.TextIOWrapper(raw, encoding="utf-8")
    return path.open(encoding="utf-8")


def _json_lines(path: Path, text_field: str) -> Iterator[str]:
    with _open_text(path) as handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise SourceError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
            yield _text_of(record, text_field, f"{path}:{lineno}")


def _text_of(record: object, text_field: str, where: str) -> str:
    if not isinstance(record, dict) or text_field not in record:
        raise SourceError(f"{where}: no text field {text_field!r}")
    text = record[text_field]
    if not isinstance(text, str):
        raise SourceError(f"{where}: field {text_field!r} is not a string")
    return text


def _parquet(path: Path, text_field: str) -> Iterator[str]:
    import pyarrow.parquet as pq

    table = pq.ParquetFile(path)
    if text_field not in table.schema_arrow.names:
        raise SourceError(
            f"{path}: no text column {text_field!r}; columns are {table.schema_arrow.names}"
        )
    row = 0
    for batch in table.iter_batches(columns=[text_field], batch_size=4096):
        for text in batch.column(0).to_pylist():
            row += 1
            if text is not None and not isinstance(text, str):
                raise SourceError(f"{path}: row {row}: column {text_field!r} is not a string")
            yield text or ""


def _file_documents(path: Path, text_field: str) -> Iterator[str]:
    if path.name.endswith(JSON_SUFFIXES):
        yield from _json_lines(path, text_field)
    elif path.name.endswith(".parquet"):
        yield from _parquet(path, text_field)
    else:
        yield path.read_text(encoding="utf-8", errors="replace")


def _hf_dataset(spec: SourceSpec, part: int, num_parts: int):
    import datasets

    name = spec.source.removeprefix("hf:")
    folder = Path(name).expanduser()
    try:
        if folder.is_dir():
            data = datasets.load_from_disk(str(folder))
            if isinstance(data, datasets.DatasetDict):
                if spec.split not in data:
                    raise SourceError(f"{folder}: no split {spec.split!r}; splits are {list(data)}")
                data = data[spec.split]
        else:
            data = datasets.load_dataset(
                name, spec.hf_config, split=spec.split, streaming=spec.streaming
            )
    except (FileNotFoundError, ValueError) as err:
        if isinstance(err, SourceError):
            raise
        raise SourceError(
            f"{spec.source}: cannot load dataset ({str(err).splitlines()[0]})"
        ) from None
    if text_field_missing(data, spec.text_field):
        raise SourceError(f"{spec.source}: no text field {spec.text_field!r}")
    if num_parts > 1:
        data = data.shard(num_shards=num_parts, index=part, contiguous=True)
    return data


def text_field_missing(data, text_field: str) -> bool:
    names = getattr(data, "column_names", None)
    return names is not None and text_field not in names


def documents(
    spec: SourceSpec, max_docs: int | None = None, part: int = 0, num_parts: int = 1
) -> Iterator[str]:
    """The non-empty documents of `spec` in a fixed order; part k of N is the k-th contiguous run of
    files (or rows), so the parts' documents in part order are the documents of the whole."""
    if spec.kind == "builtin":
        docs: Iterator[str] = BUILTIN[spec.source]() if part == 0 else iter(())
    elif spec.kind == "hf":
        data = _hf_dataset(spec, part, num_parts)
        docs = (
            _text_of(row, spec.text_field, f"{spec.source} row {i}") for i, row in enumerate(data)
        )
    elif spec.kind == "megatron":
        raise SourceError(f"{spec.source}: a Megatron source holds tokens, not documents to read")
    else:
        files = resolve_files(spec.source)
        files = files[len(files) * part // num_parts : len(files) * (part + 1) // num_parts]
        docs = (doc for path in files for doc in _file_documents(path, spec.text_field))
    count = 0
    for doc in docs:
        if max_docs is not None and count >= max_docs:
            return
        if doc.strip():
            count += 1
            yield doc


def check_source(spec: SourceSpec) -> None:
    """Fail early on a source that cannot exist: unknown name or format, missing files."""
    if spec.kind == "files":
        if not spec.source.endswith(FILE_SUFFIXES) and "*" not in spec.source:
            raise SourceError(
                f"unknown data source {spec.source!r}; expected one of {list(BUILTIN)}, "
                f"hf:<dataset>, or files ending in {', '.join(FILE_SUFFIXES)}"
            )
        resolve_files(spec.source)


def source_fields(spec: SourceSpec) -> dict[str, object]:
    """The source's own fields, without those a subclass (a domain's config) adds."""
    return {f.name: getattr(spec, f.name) for f in fields(SourceSpec)}


def fingerprint(spec: SourceSpec) -> str:
    """Changes whenever the documents of `spec` may have changed: for files and dataset folders,
    their names relative to the source's folder and their bytes (`cpt.data.digests`), not where
    the folder lies or when the files were touched."""
    fields_, files = source_fields(spec), []
    if spec.kind == "files":
        root = Path(glob_root(spec.source)).expanduser()
        files = resolve_files(spec.source)
        fields_["source"] = str(Path(spec.source).expanduser().relative_to(root))
    elif spec.kind == "hf":  # a dataset folder saved to disk, or a hub id (no files here)
        root = Path(spec.source.removeprefix("hf:")).expanduser()
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
        if files:
            fields_["source"] = "hf:"
    if files:
        names = [str(p.relative_to(root)) for p in files]
        fields_["files"] = list(zip(names, file_digests(files)))
    h = hashlib.sha256(json.dumps(fields_, sort_keys=True).encode())
    if spec.kind == "builtin":
        h.update(sys.version.encode())
        for path in BUILTIN_FILES[spec.source]():
            h.update(f"{path}:{path.stat().st_size}".encode())
    return h.hexdigest()


def glob_root(pattern: str) -> str:
    """The folder a path or glob starts from: its parts before the first wildcard (a file's own
    folder)."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts:
        if glob.has_magic(part):
            break
        fixed.append(part)
    root = Path(*fixed) if fixed else Path(".")
    return str(root.parent if len(fixed) == len(parts) else root)
