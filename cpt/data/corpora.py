"""Where documents come from: the two built-in corpora and JSON-lines files.

The built-in corpora need no download: every CPython installation carries them.
- `python-docs` (English prose): the documentation topics in `pydoc_data` plus, per module of the
  standard library, its module, class and function docstrings (read with `ast`, never imported).
- `python-code` (source code): the standard library's modules with their docstrings blanked out,
  so that the two domains overlap as little as possible.
"""

from __future__ import annotations

import ast
import glob
import hashlib
import json
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

BUILTIN = ("python-docs", "python-code")
# Test suites, generated tables and vendored copies are not representative of either domain.
_SKIP_PARTS = {"test", "tests", "idle_test", "encodings", "site-packages", "dist-packages"}
_SKIP_PREFIXES = ("_sysconfigdata", "config-")


class SourceError(ValueError):
    """A data source that cannot be read: unknown name, missing file, corrupt line, no text."""


def stdlib_files() -> list[Path]:
    """The standard library's own `.py` files, sorted, without tests and generated tables."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if _SKIP_PARTS.intersection(rel.parts[:-1]) or rel.parts[0].startswith(_SKIP_PREFIXES):
            continue
        if rel.parts[0] == "pydoc_data":  # that is the documentation itself
            continue
        files.append(path)
    return files


def _parse(path: Path) -> ast.Module | None:
    try:
        return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return None


def _docstring_nodes(tree: ast.Module) -> Iterator[tuple[str, ast.Expr]]:
    """(qualified name, docstring node) for the module and every class and function in it."""
    stack: list[tuple[str, ast.AST]] = [("", tree)]
    while stack:
        prefix, node = stack.pop(0)
        body = getattr(node, "body", [])
        first = body[0] if body else None
        if (
            isinstance(first, ast.Expr)
            and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)
        ):
            yield prefix, first
        for child in body:
            if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                stack.append((f"{prefix}.{child.name}" if prefix else child.name, child))


def python_docs() -> Iterator[str]:
    from pydoc_data.topics import topics

    for name in sorted(topics):
        yield topics[name].strip()
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in stdlib_files():
        tree = _parse(path)
        if tree is None:
            continue
        module = ".".join(path.relative_to(root).with_suffix("").parts)
        parts = []
        for name, node in _docstring_nodes(tree):
            text = ast.get_docstring(ast.Module(body=[node], type_ignores=[]), clean=True) or ""
            if text.strip():
                parts.append(f"{module}.{name}\n{text}" if name else f"{module}\n{text}")
        if parts:
            yield "\n\n".join(parts)


def python_code() -> Iterator[str]:
    for path in stdlib_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        tree = _parse(path)
        if tree is None:
            continue
        lines = text.splitlines(keepends=True)
        for _, node in _docstring_nodes(tree):
            for i in range(node.lineno - 1, node.end_lineno or node.lineno):
                lines[i] = ""
        code = "".join(lines).strip()
        if code:
            yield code


def _jsonl_files(pattern: str) -> list[Path]:
    paths = sorted(Path(p) for p in glob.glob(str(Path(pattern).expanduser())))
    if not paths:
        raise SourceError(f"{pattern}: no such file; expected a .jsonl file or a glob matching some")
    return paths


def read_jsonl(pattern: str, text_field: str) -> Iterator[str]:
    for path in _jsonl_files(pattern):
        with path.open(encoding="utf-8") as handle:
            for lineno, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise SourceError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
                if not isinstance(record, dict) or text_field not in record:
                    raise SourceError(f"{path}:{lineno}: no text field {text_field!r}")
                text = record[text_field]
                if not isinstance(text, str):
                    raise SourceError(f"{path}:{lineno}: field {text_field!r} is not a string")
                if text.strip():
                    yield text


def documents(source: str, text_field: str = "text", max_docs: int | None = None) -> Iterator[str]:
    """The documents of `source` in a fixed order, at most `max_docs` of them."""
    if source == "python-docs":
        docs = python_docs()
    elif source == "python-code":
        docs = python_code()
    elif source.endswith((".jsonl", ".json")) or "*" in source:
        docs = read_jsonl(source, text_field)
    else:
        raise SourceError(
            f"unknown data source {source!r}; expected one of {list(BUILTIN)} or a .jsonl path"
        )
    for i, doc in enumerate(docs):
        if max_docs is not None and i >= max_docs:
            return
        yield doc


def source_fingerprint(source: str) -> str:
    """Changes whenever the documents of `source` may have changed (cheap: no file is read)."""
    h = hashlib.sha256(source.encode())
    if source in BUILTIN:
        h.update(sys.version.encode())
        for path in stdlib_files():
            h.update(f"{path}:{path.stat().st_size}".encode())
    else:
        for path in _jsonl_files(source) if source.endswith((".jsonl", ".json")) or "*" in source else []:
            st = path.stat()
            h.update(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()
