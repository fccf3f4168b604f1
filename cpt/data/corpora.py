"""The built-in corpora, which need no download: every installation of this project carries them.
- `python-docs` (English prose): the documentation topics in `pydoc_data` plus, per module of the
  standard library, its module, class and function docstrings (read with `ast`, never imported).
- `python-code` (source code): the standard library's modules with their docstrings blanked out,
  so that the two domains overlap as little as possible.
- `package-docs` (English prose on other subjects): the docstrings, per module, of the packages
  this project installs (torch, numpy, matplotlib, Lightning, wandb, ...): tensors, arrays, plots
  and training rather than the standard library's files, sockets and text. The same kind of text as
  `python-docs` from another source, so the two overlap the way the Pile and SlimPajama do (a weak
  shift); about 4x its size, which lets the twins' upstream model train longer without many epochs.
"""

from __future__ import annotations

import ast
import importlib.util
import sysconfig
from collections.abc import Iterator
from pathlib import Path

BUILTIN = ("python-docs", "python-code", "package-docs")
# install_requires of setup.cfg whose docstrings are prose (in this order; a missing one is skipped)
PACKAGES = (
    "torch",
    "numpy",
    "matplotlib",
    "lightning",
    "wandb",
    "huggingface_hub",
    "pyarrow",
    "hydra",
    "omegaconf",
    "tqdm",
)
# Test suites, generated tables and vendored copies are not representative of either domain.
_SKIP_PARTS = {
    "test",
    "tests",
    "testing",
    "idle_test",
    "encodings",
    "site-packages",
    "dist-packages",
}
_SKIP_PARTS |= {"vendor", "_vendor", "vendored", "_vendored", "third_party"}
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


def package_files() -> list[Path]:
    """The `.py` files of the PACKAGES installed here, sorted per package, without tests and vendored
    copies."""
    files = []
    for package in PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            continue
        root = Path(spec.origin).parent
        for path in sorted(root.rglob("*.py")):
            if not _SKIP_PARTS.intersection(path.relative_to(root).parts[:-1]):
                files.append(path)
    return files


def _module_docs(path: Path, module: str) -> str:
    """All docstrings of one module, each under its qualified name; "" when it has none."""
    tree = _parse(path)
    if tree is None:
        return ""
    parts = []
    for name, node in _docstring_nodes(tree):
        text = ast.get_docstring(ast.Module(body=[node], type_ignores=[]), clean=True) or ""
        if text.strip():
            parts.append(f"{module}.{name}\n{text}" if name else f"{module}\n{text}")
    return "\n\n".join(parts)


def python_docs() -> Iterator[str]:
    from pydoc_data.topics import topics

    for name in sorted(topics):
        yield topics[name].strip()
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in stdlib_files():
        text = _module_docs(path, ".".join(path.relative_to(root).with_suffix("").parts))
        if text:
            yield text


def package_docs() -> Iterator[str]:
    for path in package_files():
        parts = path.parts
        module = ".".join(
            parts[parts.index("site-packages") + 1 :] if "site-packages" in parts else parts[-2:]
        )
        text = _module_docs(path, module.removesuffix(".py"))
        if text:
            yield text


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
