"""The one requeue path: a SLURM time limit (or pre-emption) saves the whole run and requeues it.

SLURM warns a job before its time limit with a signal (`--signal=USR2@120`: what the `cluster=slurm`
launcher asks through submitit, or an sbatch script's `#SBATCH --signal=USR2@120`; USR1 is taken
the same way). On it, global rank 0 asks Lightning to stop as it stops on SIGTERM: at the end of
the current optimizer step, every rank together (Lightning broadcasts rank 0's decision each step).
`SaveOnFailure` then writes `checkpoints/last.ckpt` with the state after that step, and
`requeue_after_save` requeues the job (`scontrol requeue`) and leaves the process without a result,
so that submitit's launcher waits for the requeued job instead of taking this one as finished. The
requeued job runs the same command; `resume=auto` restores `last.ckpt` and the run goes on as if it
had never stopped (the same weights and metrics, bit for bit; tests/e2e/test_slurm.py).

A SIGTERM (pre-emption, `scancel`) takes Lightning's own path to the same save; SLURM requeues a
pre-empted job itself where the cluster's PreemptMode says so.
"""

from __future__ import annotations

import logging
import signal
import subprocess
from types import FrameType
from typing import Any

from cpt.scale.launch import launch, requeue_id

log = logging.getLogger(__name__)
SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)


class TimeLimit:
    """Installed for the whole run inside a SLURM job: remembers SLURM's warning signal and turns
    it into Lightning's stop at the next step boundary (also when it came before `fit`)."""

    def __init__(self) -> None:
        self.signalled: int | None = None
        self.trainer: Any = None
        self._previous: dict[int, Any] = {}

    def install(self) -> TimeLimit:
        if requeue_id() is not None:
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def uninstall(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def watch(self, trainer: Any) -> None:
        """From now on the warning stops this trainer (at once if it came already)."""
        self.trainer = trainer
        if self.signalled is not None:
            self._stop()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.warning("signal %d: SLURM's time limit is near; saving at the next step", signum)
        self.signalled = signum
        if self.trainer is not None:
            self._stop()

    def _stop(self) -> None:
        # rank 0 decides; Lightning broadcasts its decision at every step (the other ranks' own
        # flags would stop them a step apart)
        if launch().is_global_zero:
            self.trainer._signal_connector.received_sigterm = True


def requeue_after_save(time_limit: TimeLimit) -> bool:
    """After the stop's checkpoint is written: requeue the job (global rank 0) when SLURM's
    warning signal stopped it; True when the job was requeued."""
    job = requeue_id()
    if time_limit.signalled is None or job is None:
        return False
    if launch().is_global_zero:
        done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
        if done.returncode != 0:
            log.error("scontrol requeue %s failed: %s", job, done.stderr.strip())
            return False
        log.warning("requeued SLURM job %s; it resumes from checkpoints/last.ckpt", job)
    return True
