"""Which rank a process is and which run folder it shares, read from its launcher (cpt/scale/launch.py)."""

from __future__ import annotations

import pytest

from cpt.scale.launch import launch, requeue_id, run_id

LAUNCHERS = ("TORCHELASTIC_RUN_ID", "RANK", "WORLD_SIZE", "LOCAL_RANK", "NODE_RANK")
SLURM = ("SLURM_JOB_ID", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_STEP_ID", "SLURM_STEP_NUM_TASKS",
         "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID")  # fmt: skip


@pytest.fixture
def env(monkeypatch):
    for key in (*LAUNCHERS, *SLURM):
        monkeypatch.delenv(key, raising=False)
    return lambda **values: [monkeypatch.setenv(k, str(v)) for k, v in values.items()]


def test_one_process_is_rank_zero_in_a_folder_of_its_time(env):
    found = launch()
    assert (found.launcher, found.rank, found.world_size, found.is_global_zero) == (
        "none",
        0,
        1,
        True,
    )
    assert requeue_id() is None and run_id().count("/") == 1  # <date>/<time>


@pytest.mark.parametrize("rank", [0, 1])
def test_srun_ranks_share_the_job_and_step(env, rank):
    env(SLURM_JOB_ID=42, SLURM_PROCID=rank, SLURM_NTASKS=2, SLURM_STEP_NUM_TASKS=2, SLURM_STEP_ID=0)
    found = launch()
    assert (found.launcher, found.rank, found.world_size) == ("slurm", rank, 2)
    assert found.is_global_zero == (rank == 0)
    assert run_id() == "slurm-42.0" and requeue_id() == "42"


def test_an_array_task_is_requeued_by_its_array_name(env):
    env(SLURM_JOB_ID=43, SLURM_PROCID=0, SLURM_ARRAY_JOB_ID=40, SLURM_ARRAY_TASK_ID=3)
    assert run_id() == "slurm-40_3" and requeue_id() == "40_3"  # the batch step: no step id


@pytest.mark.parametrize(("run", "shared"), [("abc-123", "torchrun-abc-123"), ("none", None)])
def test_torchrun_ranks_share_its_run(env, run, shared):
    env(TORCHELASTIC_RUN_ID=run, RANK=1, WORLD_SIZE=2, LOCAL_RANK=1)
    found = launch()
    assert (found.launcher, found.rank, found.world_size, found.is_global_zero) == (
        "torchrun", 1, 2, False,
    )  # fmt: skip
    assert found.job == shared if shared else found.job.startswith("torchrun-")


def test_a_lightning_child_knows_only_that_it_is_not_rank_zero(env):
    env(LOCAL_RANK=1, NODE_RANK=0, WORLD_SIZE=2)
    assert launch().is_global_zero is False and launch().job is None
