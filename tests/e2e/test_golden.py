"""A golden loss curve (as torchtitan keeps one): a fixed-seed 30-step run of the `tiny` model on a
corpus generated here from a seeded RNG (no dependence on the Python installation's own text), its
losses stored in `tests/golden/tiny_30_steps.json` and compared at a tight tolerance, so that a
silent change of numerics (initialisation, attention, loss, optimizer, data order) fails.

After an intended change, regenerate with `CPT_UPDATE_GOLDEN=1 python -m pytest tests/test_golden.py`
and say why in the commit.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from cpt.train import run
from tests.conftest import compose_train

GOLDEN = Path(__file__).parent / "golden" / "tiny_30_steps.json"
WORDS = [
    "the",
    "a",
    "of",
    "to",
    "in",
    "model",
    "data",
    "loss",
    "step",
    "token",
    "learning",
    "rate",
    "warm",
    "decay",
    "replay",
    "gap",
]


def corpus(path: Path) -> Path:
    rng = np.random.default_rng(20261129)
    with path.open("w") as handle:
        for _ in range(300):
            words = rng.choice(WORDS, size=int(rng.integers(20, 120)))
            handle.write(json.dumps({"text": " ".join(words)}) + "\n")
    return path


def test_the_tiny_run_follows_its_golden_loss_curve(tmp_path):
    cfg = compose_train(
        [
            "data=jsonl",
            f"data.domains.downstream.source={corpus(tmp_path / 'corpus.jsonl')}",
            "data.domains.downstream.val_tokens=2048",
            "data.tokenizer=bpe:300",
            f"data.dir={tmp_path / 'data'}",
            "data.seq_len=32",
            "data.micro_batch_size=4",
            "data.num_workers=0",
            "logger=csv",
            "trainer.max_steps=30",
            "trainer.log_every_n_steps=1",
            "trainer.val_check_interval=30",
            "trainer.enable_progress_bar=false",
            "optim.max_lr=3e-3",
            "schedule.warmup=5",
            "eval_before_fit=false",
            "seed=7",
            f"output_dir={tmp_path / 'run'}",
        ]
    )
    run(cfg)
    with (tmp_path / "run" / "metrics.csv").open() as handle:
        losses = {
            int(r["step"]): float(r["train/loss"])
            for r in csv.DictReader(handle)
            if r["train/loss"]
        }
    curve = [losses[s] for s in range(30)]
    if os.environ.get("CPT_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(json.dumps({"train/loss": curve}, indent=1) + "\n")
    golden = json.loads(GOLDEN.read_text())["train/loss"]
    assert curve[-1] < curve[0] - 1.0  # it learns
    assert curve == pytest.approx(golden, abs=2e-4)
