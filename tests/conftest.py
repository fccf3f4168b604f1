"""Shared fixtures: the real Hydra config composed down to tiny CPU runs."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from cpt import config as config_schema

pytest_plugins = ["tests.task_fixtures"]  # the lm-eval tests' trained model, one per session

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # lm-eval tasks of local files; no download
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("CPT_CACHE", tempfile.mkdtemp(prefix="cpt-cache-"))  # file digests
config_schema.register()

# A small slice of both built-in corpora and a small tokenizer: seconds, not minutes.
SMALL_DATA = [
    "data.tokenizer=bpe:512",
    "data.domains.upstream.max_docs=40",
    "data.domains.downstream.max_docs=40",
    "data.domains.upstream.val_tokens=2048",
    "data.domains.downstream.val_tokens=2048",
    "data.seq_len=32",
]


def compose_train(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=overrides)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data cache for the whole session, so the tokenizer is trained once."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture
def tiny_run(data_dir: Path, tmp_path: Path):
    """compose(...) for a few-step CPU run writing into its own folder."""

    def make(*overrides: str, out: str = "run") -> DictConfig:
        return compose_train(tiny_overrides(data_dir, tmp_path / out, *overrides))

    return make


def tiny_overrides(data_dir: Path, out: Path, *overrides: str) -> list[str]:
    return [
        "debug=fast",
        "logger=csv",
        f"data.dir={data_dir}",
        f"output_dir={out}",
        *SMALL_DATA,
        *overrides,
    ]


@pytest.fixture(scope="session")
def upstream_checkpoint(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """The last checkpoint of a 3-step tiny run: where the CPT tests start (trained once)."""
    from cpt.train import run

    out = tmp_path_factory.mktemp("upstream") / "up"
    run(compose_train(tiny_overrides(data_dir, out, "trainer.max_steps=3")))
    return out / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="session")
def sweep(tmp_path_factory, data_dir) -> Path:
    """2 max LRs x 2 replay fractions, one max LR invalid: 2 jobs finish, 2 fail."""
    folder = tmp_path_factory.mktemp("sweep") / "grid"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cpt.train",
            "-m",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            f"hydra.sweep.dir={folder}",
            "debug=fast",
            "logger=wandb",
            f"data.dir={data_dir}",
            *SMALL_DATA,
            "data.train=downstream",
            "callbacks=[cpt,task_eval]",
            "callbacks.stability_gap.batches=1",
            "callbacks.task_eval.tasks=[next_line_downstream]",
            "callbacks.task_eval.limit=8",
            "callbacks.task_eval.dense=[[2,1]]",
            "trainer.max_steps=4",
            "optim.max_lr=1e-3,-1",
            "callbacks.replay.fraction=0.0,0.5",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**__import__("os").environ, "WANDB_MODE": "offline"},
    )
    assert result.returncode != 0  # Hydra reports the failed jobs at the end
    assert "optim.max_lr: expected a positive learning rate" in result.stderr + result.stdout
    return folder
