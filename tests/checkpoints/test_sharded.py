"""Sharded checkpoint saves survive a kill and change kind (file <-> folder) in one rename: a reader
only ever finds the previous checkpoint or the new one, whole."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
import torch

from cpt.checkpoints import sharded
from cpt.checkpoints.files import read_lightning_checkpoint
from cpt.models.hf import CheckpointError
from cpt.run.build import resolve_resume
from tests.helpers import REPO


def _state(step: int) -> dict:
    return {
        "global_step": step,
        "state_dict": {"w": torch.full((512, 512), float(step))},
        "optimizer_states": [],
    }


def test_a_kill_during_a_sharded_save_leaves_the_previous_checkpoint(tmp_path):
    folder = tmp_path / "checkpoints" / "last.ckpt"
    sharded.save(_state(1), folder, rank=0, barrier=lambda: None)
    # another save over it, killed (SIGKILL) once its first shard file's bytes are written
    script = (
        "import os, signal, torch\n"
        "from cpt.checkpoints import sharded\n"
        "os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)\n"
        f"state = {{'global_step': 2, 'state_dict': {{'w': torch.full((512, 512), 2.0)}}}}\n"
        f"sharded.save(state, {str(folder)!r}, rank=0, barrier=lambda: None)\n"
    )
    killed = subprocess.run([sys.executable, "-c", script], cwd=REPO, timeout=120)
    assert killed.returncode == -signal.SIGKILL
    partial = tmp_path / "checkpoints" / ".last.ckpt.tmp"
    assert partial.is_dir()  # what the killed save left, under a name no reader takes
    with pytest.raises(CheckpointError):
        sharded.check_complete(partial)
    assert resolve_resume("auto", tmp_path) == str(folder)
    previous = read_lightning_checkpoint(folder)
    assert previous["global_step"] == 1 and bool((previous["state_dict"]["w"] == 1).all())
    sharded.save(_state(3), folder, rank=0, barrier=lambda: None)  # the next save cleans up
    assert not partial.exists() and read_lightning_checkpoint(folder)["global_step"] == 3
    assert sorted(p.name for p in folder.parent.iterdir()) == ["last.ckpt"]


def test_a_checkpoint_name_changes_kind_in_one_rename(tmp_path):
    """A single-process run resuming an FSDP run writes `last.ckpt` as a file over the folder, and
    an FSDP run a folder over the file: the old one goes, the new one is whole."""
    from cpt.checkpoints.files import AtomicCheckpointIO

    folder = tmp_path / "last.ckpt"
    sharded.save(_state(1), folder, rank=0, barrier=lambda: None)
    AtomicCheckpointIO().save_checkpoint(_state(2), folder)
    assert folder.is_file() and read_lightning_checkpoint(folder)["global_step"] == 2
    sharded.save(_state(3), folder, rank=0, barrier=lambda: None)
    assert folder.is_dir() and read_lightning_checkpoint(folder)["global_step"] == 3
    link = tmp_path / "newest.ckpt"
    link.symlink_to(folder)
    sharded.save(_state(4), link, rank=0, barrier=lambda: None)  # the link goes, not its target
    assert not link.is_symlink() and read_lightning_checkpoint(link)["global_step"] == 4
    assert read_lightning_checkpoint(folder)["global_step"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt", "newest.ckpt"]
