"""The CPT techniques as callbacks: re-warming and optimizer states, replay, stability gap, drift."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cpt.checkpoints.files import read_lightning_checkpoint
from cpt.train import run
from tests.helpers import adam, metric


# ---- optimizer state at the start of CPT -------------------------------------------------------
def test_optimizer_state_fresh_load_warm(tiny_run, upstream_checkpoint):
    upstream = adam(upstream_checkpoint)
    base = [f"init=ckpt:{upstream_checkpoint}", "data.train=downstream", "schedule.warmup=0"]

    fresh = tiny_run(*base, "trainer.max_steps=2", out="fresh")
    run(fresh)
    assert int(adam(Path(fresh.output_dir) / "checkpoints/last.ckpt")[0]["step"]) == 2

    load = tiny_run(
        *base,
        "trainer.max_steps=2",
        "callbacks.rewarm.optimizer_state=load",
        "optim.weight_decay=0.0",
        "optim.betas=[0.8,0.9]",
        "optim.eps=1e-6",
        out="load",
    )
    run(load)
    saved = read_lightning_checkpoint(Path(load.output_dir) / "checkpoints/last.ckpt")
    state = saved["optimizer_states"][0]["state"]
    assert int(state[0]["step"]) == int(upstream[0]["step"]) + 2  # continued the upstream moments
    groups = saved["optimizer_states"][0]["param_groups"]
    upstream_groups = read_lightning_checkpoint(upstream_checkpoint)["optimizer_states"][0]
    assert upstream_groups["param_groups"][0]["weight_decay"] == 0.1  # what `load` must not take
    assert [(g["weight_decay"], tuple(g["betas"]), g["eps"]) for g in groups] == [
        (0.0, (0.8, 0.9), 1e-6)
    ] * 2  # this run's settings

    warm = tiny_run(
        *base,
        "trainer.max_steps=3",
        "callbacks.rewarm.optimizer_state=warm",
        "callbacks.rewarm.warm_steps=2",
        "callbacks.checkpoint.every_n_train_steps=2",
        out="warm",
    )
    run(warm)
    lrs = [v for _, v in metric(warm.output_dir, "train/lr")]
    assert lrs[:3] == pytest.approx([0.0, 0.0, 3e-4])
    after_warm = read_lightning_checkpoint(Path(warm.output_dir) / "checkpoints/step0000002.ckpt")
    start = read_lightning_checkpoint(upstream_checkpoint)["state_dict"]
    assert all(torch.equal(after_warm["state_dict"][k], v) for k, v in start.items())  # not moved
    moments = after_warm["optimizer_states"][0]["state"]
    assert int(moments[0]["step"]) == 2 and moments[0]["exp_avg_sq"].abs().sum() > 0  # but filled
