"""Which checkpoints a run keeps (cpt/checkpoints/retention.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cpt.checkpoints.retention import KeepCheckpoints
from cpt.config import ConfigError
from cpt.run.build import build
from cpt.train import run


@given(
    saved=st.sets(st.integers(0, 60), max_size=20),
    keep_last=st.one_of(st.none(), st.integers(1, 5)),
    named=st.sets(st.integers(0, 60), max_size=4),
    resumed=st.one_of(st.none(), st.integers(0, 60)),
)
def test_the_newest_the_named_and_the_resumed_checkpoints_stay(saved, keep_last, named, resumed):
    keep = KeepCheckpoints(keep_last=keep_last, keep_steps=sorted(named))
    kept = keep.kept(sorted(saved), resumed)
    newest = sorted(saved)[-keep_last:] if keep_last else sorted(saved)
    assert kept == set(newest) | (saved & named) | ({resumed} - {None})


def test_a_run_keeps_the_last_two_and_the_named_steps(tiny_run):
    cfg = tiny_run(
        "trainer.max_steps=6",
        "callbacks.checkpoint.every_n_train_steps=1",
        "callbacks.checkpoint.keep_steps=[2]",
    )
    summary = run(cfg)
    names = sorted(p.name for p in (Path(cfg.output_dir) / "checkpoints").iterdir())
    assert names == ["last.ckpt", "step0000002.ckpt", "step0000005.ckpt", "step0000006.ckpt"]
    assert summary["checkpoints_deleted"] == [f"step{n:07d}.ckpt" for n in (1, 3, 4)]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("callbacks.checkpoint.keep_last=0", "keep_last: expected a count >= 1 or null"),
        ("callbacks.checkpoint.keep_steps=[5]", r"keep_steps: \[5\] are not saved"),
    ],
)
def test_bad_retention_is_one_line(tiny_run, override, message):
    with pytest.raises(ConfigError, match=message):
        build(
            tiny_run("trainer.max_steps=6", "callbacks.checkpoint.every_n_train_steps=2", override)
        )
