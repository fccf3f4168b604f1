"""Shared fixtures: the real Hydra config composed down to tiny CPU runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from cpt import config as config_schema

pytest_plugins = ["tests.task_fixtures"]  # the lm-eval tests' trained model, one per session

CONF = Path(__file__).resolve().parents[1] / "conf"
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # lm-eval tasks of local files; no download
os.environ.setdefault("HF_HUB_OFFLINE", "1")
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
        return compose_train(
            [
                "debug=fast",
                "logger=csv",
                f"data.dir={data_dir}",
                f"output_dir={tmp_path / out}",
                *SMALL_DATA,
                *overrides,
            ]
        )

    return make
