"""`--help` on every command prints its usage and exits 0, writing nothing: each `python -m cpt.*`
module with a `__main__` block (found, so a new command is covered), each script in scripts/."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.slow  # every command's imports: half a minute of the default run

MODULES = sorted(
    ".".join(p.relative_to(REPO).with_suffix("").parts)
    for p in (REPO / "cpt").rglob("*.py")
    if 'if __name__ == "__main__":' in p.read_text()
)
SCRIPTS = sorted(p.name for p in (REPO / "scripts").glob("*.py")) + sorted(
    p.name for p in (REPO / "scripts").glob("*.sh")
)


def _commands() -> dict[str, list[str]]:
    runner = {".py": [sys.executable], ".sh": ["bash"]}
    commands = {m: [sys.executable, "-m", m] for m in MODULES}
    commands.update({s: [*runner[Path(s).suffix], str(REPO / "scripts" / s)] for s in SCRIPTS})
    return commands


@pytest.fixture(scope="module")
def helped(tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
    """Every command's `--help`, all started at once (each in its own empty folder): the
    imports of a command are seconds, and the machine's cores share them."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"  # the wrappers' python
    env = {**os.environ, "PATH": path, "OMP_NUM_THREADS": "1"}
    started = {}
    for name, command in _commands().items():
        folder = tmp_path_factory.mktemp("help")
        process = subprocess.Popen(
            [*command, "--help"], cwd=folder, env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        started[name] = (process, folder, command)
    done = {}
    for name, (process, folder, command) in started.items():
        stdout, stderr = process.communicate(timeout=300)
        done[name] = (
            subprocess.CompletedProcess(command, process.returncode, stdout, stderr),
            folder,
        )
    return done


def test_every_command_is_found():
    assert {"cpt.train", "cpt.plan", "cpt.evaluate", "cpt.data.prepare", "cpt.export"} <= set(
        MODULES
    )


@pytest.mark.parametrize("module", MODULES)
def test_module_help_prints_usage(module, helped):
    done, folder = helped[module]
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith(f"usage: python -m {module} "), done.stdout[:300]
    assert list(folder.iterdir()) == []  # nothing written (Hydra's outputs/ included)


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_help_prints_usage(script, helped):
    done, folder = helped[script]
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage: " in done.stdout.lower() and len(done.stdout.splitlines()) >= 3, done.stdout
    assert list(folder.iterdir()) == []
