"""`callbacks.health` and `model.z_loss`: the signals a long run needs, each the quantity it
names, none changing training when it only watches."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cpt.checkpoints.files import read_lightning_checkpoint
from cpt.models.norms import weight_decay_groups
from cpt.models.presets import config_from_name
from cpt.models.registry import build_model
from cpt.train import run
from tests.helpers import metric

EVERY_STEP = [
    "callbacks.checkpoint.every_n_train_steps=1",
    "callbacks.checkpoint.keep_last=null",
    "callbacks.checkpoint.save_last=false",
]


def _group_norms(state: dict, minus: dict | None = None) -> list[float]:
    """The L2 norm of each AdamW group (decay, no_decay) of a checkpoint's weights (or of their
    difference from `minus`)."""
    model = build_model(config_from_name("tiny"))
    names = {id(p): n for n, p in model.named_parameters()}
    norms = []
    for group in weight_decay_groups(model, 0.1):
        total = 0.0
        for param in group["params"]:
            key = "model." + names[id(param)]
            value = state[key].double() - (minus[key].double() if minus else 0.0)
            total += float(value.pow(2).sum())
        norms.append(total**0.5)
    return norms


def test_gradient_weight_and_update_norms_are_logged_and_are_what_they_name(tiny_run):
    cfg = tiny_run("trainer.max_steps=4", "trainer.gradient_clip_val=0.05", *EVERY_STEP)
    summary = run(cfg)
    out = Path(cfg.output_dir)
    grad, clipped = metric(out, "train/grad_norm"), metric(out, "train/grad_clipped")
    assert [s for s, _ in grad] == [0, 1, 2, 3] and all(v > 0.05 for _, v in grad)
    assert [v for _, v in clipped] == [1.0] * 4  # every step was clipped to 0.05
    folder = out / "checkpoints"
    after, before = (
        read_lightning_checkpoint(folder / f"step{n:07d}.ckpt")["state_dict"] for n in (4, 3)
    )
    for i, group in enumerate(("decay", "no_decay")):
        param = metric(out, f"train/param_norm/{group}")[-1]
        update = metric(out, f"train/update_norm/{group}")[-1]
        assert param[0] == update[0] == 3
        assert param[1] == pytest.approx(_group_norms(after)[i], rel=1e-5)
        assert update[1] == pytest.approx(_group_norms(after, before)[i], rel=1e-4)
    assert summary["health"]["grad_norm"] == pytest.approx(grad[-1][1], rel=1e-6)


def test_watching_and_an_armed_spike_rule_change_nothing_bitwise(tiny_run):
    """Without `health` and with the spike rule off, against with `health` and the rule armed
    (skip) but never firing: the same weights and the same logged losses, bit for bit."""
    plain = tiny_run(
        "trainer.max_steps=4", "callbacks=[checkpoint,rewarm,save_on_failure]", out="plain"
    )
    watched = tiny_run(
        "trainer.max_steps=4",
        "optim.on_spike=skip",
        "optim.spike_window=2",
        "optim.spike_margin=100",
        out="watched",
    )
    run(plain), run(watched)
    weights = [
        read_lightning_checkpoint(Path(c.output_dir) / "checkpoints" / "last.ckpt")["state_dict"]
        for c in (plain, watched)
    ]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    losses = [metric(c.output_dir, "train/loss") for c in (plain, watched)]
    assert losses[0] == losses[1] and len(losses[0]) == 4
    assert metric(watched.output_dir, "train/grad_clipped") and not metric(
        plain.output_dir, "train/grad_norm"
    )


def test_a_z_loss_is_logged_apart_and_changes_training(tiny_run):
    base = tiny_run("trainer.max_steps=2", out="base")
    with_z = tiny_run("trainer.max_steps=2", "model.z_loss=0.01", out="z")
    run(base), run(with_z)
    z = metric(with_z.output_dir, "train/z_loss")
    assert len(z) == 2 and all(v > 0 for _, v in z)
    first = [metric(c.output_dir, "train/loss")[0][1] for c in (base, with_z)]
    assert first[1] == pytest.approx(first[0], abs=1e-4)  # train/loss stays the cross-entropy
    weights = [
        read_lightning_checkpoint(Path(c.output_dir) / "checkpoints" / "last.ckpt")["state_dict"]
        for c in (base, with_z)
    ]
    assert not all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not metric(base.output_dir, "train/z_loss")
