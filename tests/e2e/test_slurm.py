"""On a real SLURM cluster (scripts/local_slurm.sh start; make test-slurm): a grid through the
submitit launcher whose jobs are warned of their time limit mid-run, save, are requeued and resume
to the same numbers as uninterrupted jobs; one run across `srun` and torchrun ranks."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cpt.checkpoints.files import read_lightning_checkpoint
from cpt.results.columns import summary_columns
from tests.conftest import SMALL_DATA
from tests.helpers import REPO, train

pytestmark = [pytest.mark.slurm, pytest.mark.distributed]

STEPS = 24
GRID = (
    *SMALL_DATA,
    "debug=fast",
    "logger=csv",
    f"trainer.max_steps={STEPS}",
    "trainer.val_check_interval=8",
    "callbacks=[gap,task_eval]",
    "callbacks.stability_gap.plot=false",
    "callbacks.task_eval.tasks=[next_line_downstream]",
    "callbacks.task_eval.limit=16",
    "callbacks.task_eval.dense=[[8,4]]",
    "callbacks.task_eval.every=8",
    "+callbacks.slow._target_=tests.helpers.Slow",  # a step takes 0.25 s: time to signal it
    "+callbacks.slow.seconds=0.25",
)
TIMINGS = ("wall_time_s", "resume", "task_eval")


@pytest.fixture(scope="module")
def cluster() -> dict[str, str]:
    """The local cluster's environment (its slurm.conf, the `sacct` stand-in on PATH)."""
    lines = subprocess.run(
        ["bash", str(REPO / "scripts" / "local_slurm.sh"), "env"], capture_output=True, text=True
    ).stdout.splitlines()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for line in lines:
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value.replace("$PATH", os.environ["PATH"])
    up = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True)
    if up.returncode != 0 or not up.stdout.strip().startswith(("idle", "mix", "alloc")):
        pytest.fail("the local SLURM cluster is not up: run scripts/local_slurm.sh start first")
    return env


def grid(folder: Path, data_dir: Path, env: dict[str, str]) -> subprocess.Popen:
    """`python -m cpt.train -m cluster=slurm_cpu seed=1,2 ...`: two jobs on the cluster."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cpt.train",
            "-m",
            "cluster=slurm_cpu",
            "seed=1,2",
            f"hydra.sweep.dir={folder}",
            f"data.dir={data_dir}",
            *GRID,
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def steps_logged(job: Path) -> int:
    path = job / "metrics.csv"
    if not path.is_file():
        return 0
    with path.open() as handle:
        return max(
            (int(r["step"]) for r in csv.DictReader(handle) if r.get("train/loss")), default=0
        )


def array_tasks(folder: Path) -> dict[str, str]:
    """Job folder name -> its SLURM array task (`<job>_<task>`): submitit's task i runs job i."""
    tasks = {}
    for path in (folder / ".submitit").glob("[0-9]*_[0-9]*"):
        number = path.name.split("_")[1]
        for job in folder.glob(f"{number}_*"):
            tasks[job.name] = path.name
    return tasks


def summary(job: Path) -> dict:
    found = json.loads((job / "summary.json").read_text())
    return {k: v for k, v in found.items() if k not in TIMINGS}


def weights(job: Path) -> dict[str, torch.Tensor]:
    return read_lightning_checkpoint(job / "checkpoints" / "last.ckpt")["state_dict"]


def logged(job: Path) -> dict[tuple[str, str], str]:
    """Every logged value but the timings, by (step, column)."""
    with (job / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    return {
        (r["step"], k): v
        for r in rows
        for k, v in r.items()
        if v and k != "step" and not k.startswith("perf/")
    }


@pytest.fixture(scope="module")
def grids(tmp_path_factory, data_dir, cluster) -> dict[str, Path]:
    """The same grid twice at once: `signalled` (each job warned with USR2 as SLURM warns at a
    time limit, after a third of its steps) and `straight`."""
    root = tmp_path_factory.mktemp("slurm")
    started = {name: grid(root / name, data_dir, cluster) for name in ("signalled", "straight")}
    signalled, deadline = set(), time.time() + 600
    while len(signalled) < 2 and time.time() < deadline:
        for job, task in array_tasks(root / "signalled").items():
            if job not in signalled and steps_logged(root / "signalled" / job) >= STEPS // 3:
                subprocess.run(["scancel", "--signal=USR2", task], env=cluster, check=True)
                signalled.add(job)
        time.sleep(0.2)
    for name, process in started.items():
        out, _ = process.communicate(timeout=900)
        assert process.returncode == 0, f"{name}: {out[-3000:]}"
    assert len(signalled) == 2
    return {name: root / name for name in started}


def test_a_signalled_and_requeued_grid_ends_as_the_uninterrupted_one(grids):
    jobs = sorted(p.name for p in grids["straight"].iterdir() if p.name[0].isdigit())
    assert jobs == ["0_seed=1", "1_seed=2"]
    for job in jobs:
        requeued, straight = grids["signalled"] / job, grids["straight"] / job
        log = "".join(p.read_text() for p in (grids["signalled"] / ".submitit").rglob("*.out"))
        assert log.count("requeued SLURM job") == 2  # each job stopped once and was requeued
        a, b = weights(requeued), weights(straight)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        assert summary(requeued) == summary(straight)  # every column, the resumed run's too
        assert logged(requeued) == logged(straight)  # every step's logged values, bit for bit
        resumed = json.loads((requeued / "summary.json").read_text())["resume"]
        assert resumed.endswith("checkpoints/last.ckpt")


def test_a_resumed_run_keeps_every_result_column(grids):
    """`initial_val_loss` comes back from the checkpoint, and with it every forgetting, gap and
    task-gap column of runs.csv and wandb."""
    requeued = summary_columns(summary(grids["signalled"] / "0_seed=1"))
    straight = summary_columns(summary(grids["straight"] / "0_seed=1"))
    assert {"forgetting/upstream", "forgetting/downstream"} <= set(requeued)
    assert any(c.startswith("gap/") for c in requeued)
    assert any(c.startswith("task_gap/") for c in requeued)
    assert requeued == straight


def test_launching_the_grid_again_returns_at_once(grids, data_dir, cluster):
    """`cluster=slurm_cpu` is resume=auto skip_finished=true: a finished job is left as it is."""
    folder = grids["straight"]
    before = {
        job: (folder / job / "summary.json").stat().st_mtime_ns for job in ("0_seed=1", "1_seed=2")
    }
    again = grid(folder, data_dir, cluster)
    out, _ = again.communicate(timeout=600)
    assert again.returncode == 0, out[-2000:]
    for job, stamp in before.items():
        assert (folder / job / "summary.json").stat().st_mtime_ns == stamp
    logs = "".join(p.read_text() for p in (folder / ".submitit").rglob("*.out"))
    assert logs.count("finished already (skip_finished=true)") == 2


def srun_job(folder: Path, data_dir: Path, env: dict[str, str], *overrides: str) -> Path:
    """`sbatch --ntasks-per-node=2` running `srun python -m cpt.train ...` in `folder`; the run
    folder is Hydra's default, which every rank derives from the SLURM job."""
    folder.mkdir(parents=True, exist_ok=True)
    command = " ".join(
        [
            "srun",
            sys.executable,
            "-m",
            "cpt.train",
            "logger=csv",
            f"data.dir={data_dir}",
            *SMALL_DATA,
            *overrides,
        ]
    )
    job = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "--wait",
            "--ntasks-per-node=2",
            "-o",
            "job-%j.out",
            "--wrap",
            command,
        ],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    job_id = job.stdout.strip().split(";")[0]
    log = (folder / f"job-{job_id}.out").read_text()
    assert job.returncode == 0, log[-3000:]
    assert log.count("rank 1 waited for global rank 0 to prepare the data") == 1
    runs = list((folder / "outputs" / "runs").iterdir())
    assert [r.name for r in runs] == [f"slurm-{job_id}.0"]  # one folder for both ranks
    return runs[0]


ONE = (
    "trainer.precision=32-true",
    "data.micro_batch_size=4",
    "data.global_batch_size=8",
    "trainer.max_steps=6",
    "trainer.enable_progress_bar=false",
)
TWO = ("trainer.accelerator=cpu", "trainer.devices=2")


@pytest.mark.parametrize(
    ("strategy", "tolerance"), [("+trainer.strategy=ddp", 1e-4), ("trainer=fsdp", 2e-3)]
)
def test_srun_ranks_train_as_one_process(tmp_path, data_dir, cluster, strategy, tolerance):
    run = srun_job(tmp_path / "job", tmp_path / "fresh-data", cluster, *ONE, *TWO, strategy)
    one = train(tmp_path / "one", tmp_path / "fresh-data", *ONE)
    both = json.loads((run / "summary.json").read_text())
    assert both["geometry"]["world_size"] == 2
    for domain, loss in one["final_val_loss"].items():
        assert both["final_val_loss"][domain] == pytest.approx(loss, abs=tolerance)
    prepared = [p.name for p in (tmp_path / "fresh-data").iterdir() if p.name.startswith("python-")]
    assert len(prepared) == 2  # one folder per domain, written by rank 0


def test_preparation_in_parts_runs_as_a_job_array(tmp_path, cluster):
    """`python -m cpt.data.prepare -m hydra/launcher=slurm_cpu part=...`: one CPU task per part,
    then `finalize=true`: the same files, byte for byte, as one process writes."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(3):
        (corpus / f"{i}.jsonl").write_text(
            "".join(json.dumps({"text": f"doc {i} {j} " * (9 + j)}) + "\n" for j in range(6))
        )
    common = [
        "data=jsonl",
        f"data.domains.downstream.source={corpus}/*.jsonl",
        "data.domains.downstream.val_tokens=30",
        "data.tokenizer=bpe:300",
        f"hydra.run.dir={tmp_path / 'run'}",  # not the repository's outputs/
    ]

    def prepare(*args: str) -> str:
        try:
            done = subprocess.run(
                [sys.executable, "-m", "cpt.data.prepare", *args, *common],
                cwd=REPO,
                env=cluster,
                capture_output=True,
                text=True,
                timeout=300,
            )
        except subprocess.TimeoutExpired:  # say what the cluster was doing
            queue = subprocess.run(["squeue"], env=cluster, capture_output=True, text=True)
            logs = [p.read_text()[-1500:] for p in sorted(tmp_path.glob("sweep/.submitit/*/*.err"))]
            pytest.fail(f"prepare {args} timed out; squeue:\n{queue.stdout}\n" + "\n".join(logs))
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        return done.stdout + done.stderr

    sweep = tmp_path / "sweep"
    prepare(
        "-m", "hydra/launcher=slurm_cpu", f"hydra.sweep.dir={sweep}", f"data.dir={tmp_path / 'parts'}",
        "num_parts=3", "part=0,1,2",
    )  # fmt: skip
    tasks = [p.name for p in (sweep / ".submitit").glob("[0-9]*_[0-9]*")]
    assert len(tasks) == 3 and len({t.split("_")[0] for t in tasks}) == 1  # one job array
    prepare(f"data.dir={tmp_path / 'parts'}", "num_parts=3", "finalize=true")
    prepare(f"data.dir={tmp_path / 'one'}")
    parts = sorted(p.name for p in (tmp_path / "parts").iterdir())
    one = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert parts == one  # the dataset and the tokenizer; the parts are gone
    dataset = next(name for name in one if name != "tokenizers")
    for path in sorted((tmp_path / "one" / dataset).iterdir()):  # token files, index, meta
        assert (tmp_path / "parts" / dataset / path.name).read_bytes() == path.read_bytes()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("hydra.launcher.cpus_per_task=64", "CPUs per node requested but the nodes of partition"),
        ("hydra.launcher.nodes=3", "hydra.launcher.nodes: 3 requested but partition"),
        ("hydra.launcher.gpus_per_node=1", "hydra.launcher.gpus_per_node: 1 requested"),
        ("hydra.launcher.partition=nosuch", "partition nosuch has no nodes"),
    ],
)
def test_a_job_larger_than_the_partition_is_refused_before_submitting(
    cluster, tmp_path, override, message
):
    done = subprocess.run(
        [sys.executable, "-m", "cpt.train", "-m", "cluster=slurm_cpu", override, "seed=1,2",
         f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        cwd=REPO, env=cluster, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2 and message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "sweep").exists()
