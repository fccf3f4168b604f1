"""`--help` on every command prints its usage and exits 0, writing nothing: each `python -m cpt.*`
module with a `__main__` block (found, so a new command is covered), each script in scripts/."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

MODULES = sorted(
    ".".join(p.relative_to(REPO).with_suffix("").parts)
    for p in (REPO / "cpt").rglob("*.py")
    if 'if __name__ == "__main__":' in p.read_text()
)
SCRIPTS = sorted(p.name for p in (REPO / "scripts").glob("*.py")) + sorted(
    p.name for p in (REPO / "scripts").glob("*.sh")
)


def _help(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"  # the wrappers' python
    return subprocess.run(
        [*command, "--help"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PATH": path, "OMP_NUM_THREADS": "1"},
    )


def test_every_command_is_found():
    assert {"cpt.train", "cpt.plan", "cpt.evaluate", "cpt.data.prepare", "cpt.export"} <= set(
        MODULES
    )


@pytest.mark.parametrize("module", MODULES)
def test_module_help_prints_usage(module, tmp_path):
    done = _help([sys.executable, "-m", module], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith(f"usage: python -m {module} "), done.stdout[:300]
    assert list(tmp_path.iterdir()) == []  # nothing written (Hydra's outputs/ included)


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_help_prints_usage(script, tmp_path):
    runner = [sys.executable] if script.endswith(".py") else ["bash"]
    done = _help([*runner, str(REPO / "scripts" / script)], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage: " in done.stdout.lower() and len(done.stdout.splitlines()) >= 3, done.stdout
    assert list(tmp_path.iterdir()) == []
