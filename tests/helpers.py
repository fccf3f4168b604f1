"""Test-only callbacks, named by `_target_` in a test's overrides (also in child processes), and
the command line of a small CPU run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import torch

from tests.conftest import SMALL_DATA

REPO = Path(__file__).resolve().parents[1]


def cli(out: Path, data_dir: Path, *overrides: str) -> list[str]:
    """`python -m cpt.train` on the small data, writing to `out`."""
    if not any(o.startswith("data.micro_batch_size=") for o in overrides):
        overrides = ("data.micro_batch_size=4", *overrides)
    return [
        sys.executable,
        "-m",
        "cpt.train",
        "logger=csv",
        f"data.dir={data_dir}",
        *SMALL_DATA,
        "trainer.enable_progress_bar=false",
        "trainer.log_every_n_steps=1",
        f"hydra.run.dir={out}",
        *overrides,
    ]


def start(out: Path, data_dir: Path, *overrides: str) -> subprocess.Popen:
    """`cli(...)` started in the background, one thread per process (several share 2 cores)."""
    return subprocess.Popen(
        cli(out, data_dir, *overrides),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def finish(process: subprocess.Popen, out: Path) -> dict:
    """Wait for a started run; it must succeed. Its `summary.json`."""
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]
    return json.loads((out / "summary.json").read_text())


def train(out: Path, data_dir: Path, *overrides: str) -> dict:
    """A run of `python -m cpt.train` to the end; its `summary.json`."""
    return finish(start(out, data_dir, *overrides), out)


class NaNOnRank(L.Callback):
    """The first block of one rank outputs NaN for one optimizer step: a non-finite loss there."""

    def __init__(self, rank: int = 1, step: int = 1) -> None:
        self.rank, self.step, self._hook = rank, step, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_rank == self.rank and trainer.global_step == self.step and not self._hook:
            block = pl_module.model.layers[0]
            self._hook = block.register_forward_hook(lambda m, i, out: out * torch.nan)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._hook is not None and trainer.global_step > self.step:
            self._hook.remove()
            self._hook = None
