"""Who started this process, and so which rank it is and which run it belongs to.

A run's processes are started by one launcher: SLURM (`srun`: `SLURM_PROCID`, `SLURM_NTASKS`),
torchrun (`RANK`, `WORLD_SIZE`), Lightning itself (its DDP children: `LOCAL_RANK`, `NODE_RANK`), or
nobody (one process). `launch()` reads it once; global rank 0 prepares the data while the others
wait, and `run_id()` names the one run folder every process of a run agrees on (the SLURM job, and
so the same folder again after a requeue; torchrun's run), where Hydra's default would be each
process's own clock.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Launch:
    launcher: str  # slurm | torchrun | lightning | none
    rank: int  # the global rank; -1 where only the local rank is known (a Lightning child)
    world_size: int
    is_global_zero: bool
    job: (
        str | None
    )  # what every process of the run shares: the SLURM job (and step), torchrun's run


def launch() -> Launch:
    env = os.environ
    if "TORCHELASTIC_RUN_ID" in env and "RANK" in env:
        run = env["TORCHELASTIC_RUN_ID"]
        job = run if run != "none" else f"{socket.gethostname()}-{os.getppid()}"  # the agent
        rank = int(env["RANK"])
        return Launch("torchrun", rank, int(env["WORLD_SIZE"]), rank == 0, f"torchrun-{job}")
    if "SLURM_JOB_ID" in env and "SLURM_PROCID" in env:
        rank = int(env["SLURM_PROCID"])
        tasks = int(env.get("SLURM_STEP_NUM_TASKS", env.get("SLURM_NTASKS", "1")))
        return Launch("slurm", rank, tasks, rank == 0, f"slurm-{slurm_job()}")
    if "LOCAL_RANK" in env or "NODE_RANK" in env:  # a child Lightning started, or its parent
        zero = int(env.get("LOCAL_RANK", 0)) == 0 and int(env.get("NODE_RANK", 0)) == 0
        return Launch("lightning", -1, int(env.get("WORLD_SIZE", 1)), zero, None)
    return Launch("none", 0, 1, True, None)


def slurm_job() -> str:
    """The job as `scontrol requeue` names it (`<array job>_<task>` for an array task), plus the
    step where `srun` started this process (a batch script's runs stay apart; a requeued job's
    steps count from 0 again, so it finds its own folder)."""
    env = os.environ
    job = env["SLURM_JOB_ID"]
    if "SLURM_ARRAY_JOB_ID" in env and "SLURM_ARRAY_TASK_ID" in env:
        job = f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    step = env.get("SLURM_STEP_ID")
    return f"{job}.{step}" if step not in (None, "", "batch", "4294967294") else job


def requeue_id() -> str | None:
    """The job `scontrol requeue` takes, or None outside a SLURM job."""
    if "SLURM_JOB_ID" not in os.environ:
        return None
    return slurm_job().split(".")[0]


def run_id() -> str:
    """`hydra.run.dir`'s last part: the launcher's job, else the date and time (one process)."""
    return launch().job or time.strftime("%Y-%m-%d/%H-%M-%S")
