"""The CPT techniques as callbacks: re-warming and optimizer states, replay, stability gap, drift."""

from __future__ import annotations

from pathlib import Path

import torch

from cpt.callbacks import PartialFreeze
from cpt.checkpoints.files import read_lightning_checkpoint
from cpt.train import run


def test_half_fine_tuning_freezes_half_of_every_block(tiny_run, upstream_checkpoint):
    cfg = tiny_run(
        f"init=ckpt:{upstream_checkpoint}", "callbacks=[default,partial_freeze]", out="hft"
    )
    summary = run(cfg)
    frozen = [n for n in summary["frozen_parameters"] if n.endswith(".weight")]
    assert len(frozen) == 4 * 2  # 4 matrices per block, 4 blocks, half frozen
    before = read_lightning_checkpoint(upstream_checkpoint)["state_dict"]
    after = read_lightning_checkpoint(Path(cfg.output_dir) / "checkpoints/last.ckpt")["state_dict"]
    for name in summary["frozen_parameters"]:
        assert torch.equal(before[f"model.{name}"], after[f"model.{name}"])
    assert not torch.equal(before["model.embed_in.weight"], after["model.embed_in.weight"])


def test_trainable_patterns():
    freeze = PartialFreeze(trainable=[r"\.mlp\."])
    names = [
        "embed_in.weight",
        "layers.0.mlp.dense_h_to_4h.weight",
        "layers.0.attention.dense.weight",
    ]
    assert freeze.choose_frozen(names) == ["embed_in.weight", "layers.0.attention.dense.weight"]
