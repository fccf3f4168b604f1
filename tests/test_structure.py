"""The package's shape: commands at the top, packages with one job, dependencies one way, no
cycles, each mechanism once, no schema declared twice.

Read from the source with `ast`, so these rules hold for every module, including ones added later.
"""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cpt"


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


MODULES = _modules()


def _imports(path: Path) -> set[str]:
    """Every module named by an import anywhere in the file (function-level imports too)."""
    names: set[str] = set()
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*parts[: len(parts) - node.level], *([base] if base else [])])
            names |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return names


GRAPH = {m: {n for n in _imports(p) if n in MODULES and n != m} for m, p in MODULES.items()}
THIRD_PARTY = {m: {n.split(".")[0] for n in _imports(p)} for m, p in MODULES.items()}


def _reach(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in GRAPH[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_no_import_cycles():
    assert [m for m in MODULES if m in _reach(m)] == []


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("cpt.data")))
def test_data_never_reaches_models_checkpoints_module_or_callbacks(module):
    forbidden = ("cpt.models", "cpt.callbacks", "cpt.checkpoints", "cpt.module", "cpt.train")
    assert sorted(m for m in _reach(module) if m.startswith(forbidden)) == []


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("cpt.models")))
def test_models_know_no_data_callbacks_module_or_lightning(module):
    reached = _reach(module) | {module}
    assert (
        sorted(m for m in reached if m.startswith(("cpt.data", "cpt.callbacks", "cpt.module")))
        == []
    )
    assert sorted(m for m in reached if "lightning" in THIRD_PARTY[m]) == []


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("cpt.tasks")))
def test_tasks_know_data_and_models_but_not_the_training_loop(module):
    forbidden = ("cpt.callbacks", "cpt.module", "cpt.train", "cpt.checkpoints")
    assert sorted(m for m in _reach(module) | {module} if m.startswith(forbidden)) == []


def test_every_file_stays_under_400_lines():
    long = {
        str(p): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400
    }
    assert long == {}


def _dataclass_fields() -> dict[str, tuple[set[str], set[str]]]:
    """Dataclass name -> (its own annotated fields, its base class names)."""
    found = {}
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ClassDef):
                continue
            decorated = any("dataclass" in ast.unparse(d) for d in node.decorator_list)
            if decorated:
                own = {
                    s.target.id
                    for s in node.body
                    if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)
                }
                bases = {ast.unparse(b) for b in node.bases}
                found[f"{module}.{node.name}"] = (own, bases)
    return found


# The two families' architectures share Hugging Face field names by design: different networks.
SAME_NAMES_BY_DESIGN = {
    frozenset({"cpt.models.gpt_neox.GPTNeoXConfig", "cpt.models.llama.LlamaConfig"})
}


def test_no_field_list_is_declared_twice():
    """A schema copied into a second dataclass would share most of its field names."""
    classes = _dataclass_fields()
    copies = []
    for (a, (fa, ba)), (b, (fb, bb)) in itertools.combinations(classes.items(), 2):
        subclass = a.rsplit(".", 1)[1] in bb or b.rsplit(".", 1)[1] in ba
        if frozenset({a, b}) in SAME_NAMES_BY_DESIGN or subclass:
            continue
        shared = fa & fb
        if len(shared) >= 3 and len(shared) >= min(len(fa), len(fb)) / 2:
            copies.append((a, b, sorted(shared)))
    assert copies == []


def test_config_composes_the_components_own_schemas():
    from cpt.config import TrainConfig
    from cpt.data.config import DataConfig
    from cpt.models.options import ModelOptions
    from cpt.module import OptimConfig
    from cpt.schedules import ScheduleSpec

    fields = TrainConfig.__dataclass_fields__
    assert {k: fields[k].type for k in ("model", "data", "optim", "schedule")} == {
        "model": ModelOptions.__name__,
        "data": DataConfig.__name__,
        "optim": OptimConfig.__name__,
        "schedule": ScheduleSpec.__name__,
    }
    config_classes = [c for c in _dataclass_fields() if c.startswith("cpt.config.")]
    assert config_classes == ["cpt.config.TrainConfig"]


def test_scripts_are_thin_wrappers():
    """Logic lives in the package (reports in cpt/analysis); benchmarks are the one exception."""
    scripts = PACKAGE.parent / "scripts"
    for path in scripts.glob("*.py"):
        text = path.read_text()
        assert "sys.path.insert" not in text, path
        if not path.name.startswith(("bench_", "local_slurm_")):  # a stand-in for `sacct`
            assert len(text.splitlines()) <= 20, path


COMMANDS = {"train", "plan", "evaluate", "export", "demo"}  # python -m cpt.<name>
CORE = {"config", "module", "schedules", "errors", "files"}  # read top-down after the commands


def test_the_top_level_holds_commands_and_the_core_only():
    top = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    assert top == COMMANDS | CORE and len(top) <= 10
    for name in COMMANDS:
        assert 'if __name__ == "__main__":' in (PACKAGE / f"{name}.py").read_text(), name


def test_every_package_says_its_one_job():
    for init in PACKAGE.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc) > 40, f"{init.parent.name}/__init__.py has no docstring of its job"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.count(".") >= 1))
def test_no_library_module_imports_a_command(module):
    """Commands are entry points; what two commands share lives in a package."""
    commands = {f"cpt.{c}" for c in COMMANDS}
    assert sorted(GRAPH[module] & commands) == []


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("cpt.analysis")))
def test_analysis_reads_runs_and_never_launches_them(module):
    forbidden = ("cpt.reproduce", "cpt.run", "cpt.module", "cpt.callbacks", "cpt.data.prepare")
    assert sorted(m for m in _reach(module) | {module} if m.startswith(forbidden)) == []


def _calls(path: Path) -> list[str]:
    return [
        ast.unparse(n) for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Call)
    ]


def test_every_command_reports_bad_input_through_one_path():
    """`error: ...` and exit status 2 are written once (cpt/errors.py); commands call it."""
    for module, path in MODULES.items():
        if module == "cpt.errors":
            continue
        calls = _calls(path)
        assert not [
            c
            for c in calls
            if c.startswith("sys.exit(2")
            or "'error: " in c
            or '"error: ' in c
            or "f'error:" in c
            or 'f"error:' in c
        ], module


def test_files_are_renamed_into_place_in_one_place():
    """Temporary-then-rename writes go through `cpt.files.written_atomically`; only sharded
    folders and prepared datasets swap whole folders."""
    folders = {"cpt.files", "cpt.checkpoints.sharded", "cpt.data.prepare"}
    for module, path in MODULES.items():
        renames = [
            c
            for c in _calls(path)
            if c.startswith("os.replace(")
            or (".rename(" in c and "tmp" in c.split(".rename(")[0])
            or (".replace(" in c and "tmp" in c.split(".replace(")[0])
        ]
        assert module in folders or not renames, (module, renames)


def test_callbacks_share_one_protocol():
    import inspect

    import cpt.callbacks as callbacks
    from cpt.callbacks.base import CPTCallback, RunPart
    from cpt.scale.fsdp import FSDP2

    classes = [getattr(callbacks, name) for name in callbacks.__all__]
    assert classes and all(issubclass(c, CPTCallback) for c in classes)
    assert issubclass(FSDP2, RunPart)  # the strategy takes part as the callbacks do
    for module, path in MODULES.items():  # the entry point asks no callback what it can do
        assert not [c for c in _calls(path) if c.startswith("hasattr(callback")], module
    assert "hasattr" not in inspect.getsource(callbacks.StabilityGap)
