"""The quality mitigation: windows chosen by a reference model's loss, cached, then trained on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cpt.config import ConfigError
from cpt.data.quality import QualityRule, select_windows, window_scores
from cpt.data.windows import TokenWindows
from cpt.models.presets import config_from_name
from cpt.models.registry import build_model
from cpt.train import run


def test_the_kept_windows_are_those_the_reference_finds_easiest(tmp_path):
    torch.manual_seed(0)
    model = build_model(config_from_name("tiny"))
    rng = np.random.default_rng(0)
    easy = np.tile(np.arange(17, dtype=np.uint16), 40)  # one repeated pattern ...
    tokens = np.concatenate([easy, rng.integers(0, 4096, 680, dtype=np.uint16)])  # ... then noise
    windows = TokenWindows(tokens, 16, np.array([0]), False)
    score = lambda batch: model.window_losses(**batch)  # noqa: E731
    losses = window_scores(score, windows, np.arange(len(windows)))
    rule = QualityRule(reference="init", keep=0.25)
    kept = select_windows(score, windows, rule, seed=1, name="d", cache_dir=tmp_path, key="k")
    assert len(kept) == round(0.25 * len(windows)) and np.all(np.diff(kept) > 0)
    rest = np.setdiff1d(np.arange(len(windows)), kept)
    assert losses[kept].max() <= losses[rest].min()  # exactly the lowest-loss quarter
    high = select_windows(
        score,
        windows,
        QualityRule(keep=0.25, reference="init", prefer="high"),
        seed=1,
        name="d",
        cache_dir=tmp_path,
        key="k",
    )
    assert losses[high].min() >= losses[np.setdiff1d(np.arange(len(windows)), high)].max()
    assert len(list(tmp_path.glob("quality-d-*.npy"))) == 1  # scored once, read from the cache


def test_a_bad_quality_rule_is_one_line(tiny_run):
    cfg = tiny_run("data.domains.downstream.quality.keep=1.5")
    with pytest.raises(
        ConfigError, match=r"^data.domains.downstream.quality.keep: expected a fraction"
    ):
        run(cfg)


def test_the_score_cache_tells_apart_what_changes_the_scores(tmp_path):
    """Document-aware windows score differently; so does another preset trained from scratch."""
    from cpt.data.quality import reference_key

    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 4096, 2000, dtype=np.uint16)
    offsets = np.array([0, 500, 1200])
    rule = QualityRule(keep=0.5)
    calls = []

    def score(batch):
        calls.append(1)
        return batch["input_ids"].float().mean(dim=1)

    for aware in (False, True):
        windows = TokenWindows(tokens, 16, offsets, aware)
        select_windows(score, windows, rule, seed=1, name="d", cache_dir=tmp_path, key="k")
    assert len(list(tmp_path.glob("quality-d-*.npy"))) == 2
    assert reference_key("init", "scratch", "tiny") != reference_key(
        "init", "scratch", "tiny-llama"
    )
