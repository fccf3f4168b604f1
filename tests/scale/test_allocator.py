"""The speed and memory options change nothing but speed and memory: chunked loss, attention
backends, activation checkpointing, torch.compile (and its fallback)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cpt.train import run

_REUSE = """
import resource, sys, torch
from cpt.scale.allocator import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else False
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(60):  # a 64 MiB tensor made and freed as every step makes its large tensors
    big, small = torch.ones(2**24), torch.ones(1000)
    del big
print(kept, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 2**14)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_kept_freed_memory_is_reused_without_page_faults():
    """glibc as it comes faults a freed 64 MiB block's 16 k pages back in every round; told to
    keep freed memory, its heap grows for a few rounds (how many depends on the layout of the
    small blocks between) and then the block is reused without faults (cpt/scale/allocator.py)."""
    from tests.helpers import REPO

    def blocks_faulted(mode: str) -> tuple[str, int]:  # in 64 MiB blocks' worth of pages
        done = subprocess.run(
            [sys.executable, "-c", _REUSE, mode], capture_output=True, text=True, cwd=REPO
        )
        kept, blocks = done.stdout.split()
        return kept, int(blocks)

    kept, blocks = blocks_faulted("keep")
    assert kept == "True" and blocks <= 20  # bounded: 6 to 12 rounds' worth where measured
    assert blocks_faulted("as-it-comes")[1] >= 58  # every round


@pytest.mark.parametrize("keep", [True, False])
def test_cpu_training_keeps_freed_memory_unless_told_not_to(tiny_run, monkeypatch, keep):
    import cpt.train

    calls = []
    monkeypatch.setattr(cpt.train, "keep_freed_memory", lambda: calls.append(1) or True)
    run(tiny_run(f"keep_freed_memory={str(keep).lower()}", "trainer.max_steps=1"))
    assert calls == ([1] if keep else [])
