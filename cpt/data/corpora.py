"""The two built-in corpora, which need no download: every CPython installation carries them.
- `python-docs` (English prose): the documentation topics in `pydoc_data` plus, per module of the
  standard library, its module, class and function docstrings (read with `ast`, never imported).
- `python-code` (source code): the standard library's modules with their docstrings blanked out,
  so that the two domains overlap as little as possible.
"""

from __future__ import annotations

import ast
import sysconfig
from collections.abc import Iterator
from pathlib import Path

BUILTIN = ("python-docs", "python-code")
# Test suites, generated tables and vendored copies are not representative of either domain.
_SKIP_PARTS = {"test", "tests", "idle_test", "encodings", "site-packages", "dist-packages"}
_SKIP_PREFIXES = ("_sysconfigdata", "config-")


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
