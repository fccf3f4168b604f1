"""SLURM's time-limit warning: Lightning's stop at the next step on rank 0, then a requeue
(cpt/scale/requeue.py)."""

from __future__ import annotations

import os
import signal
import stat
from types import SimpleNamespace

import pytest

from cpt.scale.requeue import TimeLimit, requeue_after_save


@pytest.fixture
def in_a_job(monkeypatch, tmp_path):
    """A SLURM job's environment, with an `scontrol` that records what it is asked."""
    for key in ("SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_STEP_ID", "RANK"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_PROCID", "0")
    scontrol = tmp_path / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "asked"}\n')
    scontrol.chmod(scontrol.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    return tmp_path / "asked"


@pytest.mark.parametrize("signum", [signal.SIGUSR1, signal.SIGUSR2])
def test_the_warning_stops_the_trainer_and_the_job_is_requeued(in_a_job, signum):
    trainer = SimpleNamespace(_signal_connector=SimpleNamespace(received_sigterm=False))
    before = signal.getsignal(signum)
    limit = TimeLimit().install()
    try:
        os.kill(os.getpid(), signum)  # before fit: remembered
        assert limit.signalled == signum and not trainer._signal_connector.received_sigterm
        limit.watch(trainer)
        assert trainer._signal_connector.received_sigterm  # Lightning stops at the step's end
    finally:
        limit.uninstall()
    assert signal.getsignal(signum) == before  # the run's handlers are gone with the run
    assert requeue_after_save(limit) and in_a_job.read_text() == "requeue 77\n"


def test_without_the_warning_or_outside_a_job_nothing_is_requeued(in_a_job, monkeypatch):
    limit = TimeLimit().install()
    limit.uninstall()
    assert not requeue_after_save(limit) and not in_a_job.exists()  # a plain SIGTERM: no requeue
    monkeypatch.delenv("SLURM_JOB_ID")
    outside = TimeLimit().install()
    assert outside._previous == {}  # nothing installed outside SLURM
