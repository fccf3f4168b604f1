"""Resume, crash safety, pre-emption, non-finite losses and distributed correctness."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from cpt.checkpoints import sharded
from cpt.checkpoints.files import read_lightning_checkpoint
from cpt.config import ConfigError
from cpt.module import LossSpikeError, NonFiniteLossError
from cpt.train import run
from tests.helpers import REPO, cli, metric, train


def test_resume_auto_and_finished_run_protection(tiny_run):
    first = tiny_run("trainer.max_steps=4", out="job")
    run(first)
    with pytest.raises(ConfigError, match="already holds a finished run"):
        run(tiny_run("trainer.max_steps=4", out="job"))
    again = run(tiny_run("trainer.max_steps=6", "resume=auto", out="job"))
    assert again["steps"] == 6 and again["resume"].endswith(".ckpt")
    assert run(tiny_run("trainer.max_steps=2", "overwrite=true", out="job"))["steps"] == 2
    fresh = run(tiny_run("trainer.max_steps=2", "resume=auto", out="new"))  # nothing to resume yet
    assert fresh["resume"] is None and fresh["steps"] == 2


def test_non_finite_loss_stops_with_the_last_good_state(tiny_run):
    cfg = tiny_run(
        "optim.max_lr=1e6",
        "schedule.warmup=0",
        "trainer.max_steps=30",
        "trainer.gradient_clip_val=null",
    )
    with pytest.raises(
        NonFiniteLossError, match=r"train/loss is (nan|inf) at step \d+; the last good state"
    ):
        run(cfg)
    saved = list((Path(cfg.output_dir) / "checkpoints").glob("nonfinite-step*.ckpt"))
    assert len(saved) == 1
    state = read_lightning_checkpoint(saved[0])["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values())


def test_non_finite_loss_skips_the_whole_step(tiny_run, monkeypatch):
    """One micro-batch of step 1 (of 2 accumulated) goes NaN: that optimizer step changes
    nothing at all, the others train, and the count survives a resume."""
    from cpt.module import CPTModule

    original, calls = CPTModule.losses, []

    def losses(self, batch):
        loss, per_sequence = original(self, batch)
        calls.append(self.training)
        if self.training and sum(calls) == 4:  # step 1, its second micro-batch
            loss = loss * float("nan")
        return loss, per_sequence

    monkeypatch.setattr(CPTModule, "losses", losses)
    cfg = tiny_run(
        "optim.on_nonfinite=skip",
        "trainer.max_steps=3",
        "trainer.accumulate_grad_batches=2",
        "callbacks.checkpoint.every_n_train_steps=1",
        "callbacks.checkpoint.keep_last=null",
        "callbacks.checkpoint.save_last=false",
    )
    summary = run(cfg)
    assert summary["steps"] == 3 and summary["skipped_steps"] == 1
    folder = Path(cfg.output_dir) / "checkpoints"
    after = [read_lightning_checkpoint(folder / f"step{n:07d}.ckpt") for n in (1, 2, 3)]
    weights = [a["state_dict"] for a in after]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])  # step 1: nothing
    assert not all(torch.equal(weights[1][k], weights[2][k]) for k in weights[1])  # step 2: trains
    moments = [a["optimizer_states"][0]["state"][0] for a in after]
    assert int(moments[0]["step"]) == int(moments[1]["step"]) == 1  # no Adam step either
    assert torch.equal(moments[0]["exp_avg"], moments[1]["exp_avg"])
    assert [a["skipped_steps"] for a in after] == [0, 1, 1]  # saved, so a resume keeps it


def _spike_at(monkeypatch, micro_batch: int) -> None:
    """The training loss of one micro-batch (counted from 1) is ten times what it is."""
    from cpt.module import CPTModule

    original, calls = CPTModule.losses, []

    def losses(self, batch):
        loss, per_sequence = original(self, batch)
        calls.append(self.training)
        if self.training and sum(calls) == micro_batch:
            loss = loss * 10.0
        return loss, per_sequence

    monkeypatch.setattr(CPTModule, "losses", losses)


def test_a_loss_spike_skips_its_step_or_stops_with_the_last_good_state(tiny_run, monkeypatch):
    """A micro-batch loss far above the mean of the last two: with `on_spike=skip` the whole
    optimizer step changes nothing (weights, Adam's moments) and is counted; the rule's window
    survives a checkpoint. With `stop`, every rank stops before the step and the last good
    weights are saved as `spike-step<N>.ckpt`."""
    _spike_at(monkeypatch, 6)  # step 2, its second micro-batch
    rule = ["optim.spike_window=2", "optim.spike_margin=1.0", "trainer.accumulate_grad_batches=2"]
    cfg = tiny_run(
        "optim.on_spike=skip",
        *rule,
        "trainer.max_steps=4",
        "callbacks.checkpoint.every_n_train_steps=1",
        "callbacks.checkpoint.keep_last=null",
        "callbacks.checkpoint.save_last=false",
        out="skip",
    )
    summary = run(cfg)
    assert summary["steps"] == 4 and summary["skipped_steps"] == 1
    folder = Path(cfg.output_dir) / "checkpoints"
    after = [read_lightning_checkpoint(folder / f"step{n:07d}.ckpt") for n in (2, 3, 4)]
    weights = [a["state_dict"] for a in after]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])  # step 2: nothing
    assert not all(torch.equal(weights[1][k], weights[2][k]) for k in weights[1])
    assert [a["spikes"] for a in after] == [0, 1, 1]
    assert len(after[0]["recent_losses"]) == 2  # the window, for a resumed run
    assert metric(cfg.output_dir, "train/spikes")[0] == (2, 1.0)  # logged from its step on

    _spike_at(monkeypatch, 6)
    stop = tiny_run("optim.on_spike=stop", *rule, "trainer.max_steps=4", out="stop")
    with pytest.raises(LossSpikeError, match=r"train/loss spiked to [\d.]+, above the bound"):
        run(stop)
    saved = Path(stop.output_dir) / "checkpoints" / "spike-step0000002.ckpt"
    state = read_lightning_checkpoint(saved)["state_dict"]
    assert all(torch.equal(state[k], weights[0][k]) for k in state)  # the same 2 good steps


def _steps_logged(out: Path) -> int:
    metrics = out / "metrics.csv"
    return metrics.read_text().count("\n") if metrics.is_file() else 0


class Crash(Exception):
    """Stands for the process dying at one point of a checkpoint write."""


class _Proxy:
    """A module seen through one replaced function (for injecting a failure into it)."""

    def __init__(self, module, **replaced) -> None:
        self._module, self._replaced = module, replaced

    def __getattr__(self, name):
        return self._replaced.get(name) or getattr(self._module, name)


def _failing_io(boundary: str, when: list[int]):
    """`(torch, os)` stand-ins for the checkpoint writer (`cpt.checkpoints.files`) and the atomic
    write (`cpt.files`) that fail the write `when[0]` at `boundary`."""
    import cpt.checkpoints.files as checkpoints

    def save(obj, handle):
        when[0] -= 1
        if when[0] == 0 and boundary == "before write":
            raise Crash(boundary)
        checkpoints_torch.save(obj, handle)
        if when[0] == 0 and boundary == "mid-write":
            handle.truncate(handle.tell() // 2)  # half of it on disk, then the end
            raise Crash(boundary)

    def replace(src, dst):
        if when[0] == 0 and boundary == "before rename":
            raise Crash(boundary)
        os.replace(src, dst)
        if when[0] == 0 and boundary == "after rename":
            raise Crash(boundary)

    checkpoints_torch = checkpoints.torch
    return _Proxy(checkpoints_torch, save=save), _Proxy(os, replace=replace)


@pytest.mark.parametrize("boundary", ["before write", "mid-write", "before rename", "after rename"])
def test_a_failure_at_any_write_boundary_leaves_a_checkpoint_that_resumes_the_same(
    tiny_run, monkeypatch, boundary
):
    import cpt.checkpoints.files as checkpoints
    import cpt.files as files

    every_step = ["trainer.max_steps=5", "callbacks.checkpoint.every_n_train_steps=1"]
    straight = tiny_run(*every_step, out="straight")
    run(straight)
    cfg = tiny_run(*every_step, out="crashed")
    fake_torch, fake_os = _failing_io(boundary, [5])  # the 5th write: during step 3's saves
    monkeypatch.setattr(checkpoints, "torch", fake_torch)
    monkeypatch.setattr(files, "os", fake_os)
    with pytest.raises(Crash):
        run(cfg)
    monkeypatch.undo()
    folder = Path(cfg.output_dir) / "checkpoints"
    saved = sorted(folder.glob("*.ckpt"))
    assert saved and all(read_lightning_checkpoint(p)["global_step"] >= 1 for p in saved)
    resumed = tiny_run(*every_step, "resume=auto", out="crashed")
    assert run(resumed)["steps"] == 5

    def final(out):
        return read_lightning_checkpoint(Path(out) / "checkpoints" / "last.ckpt")["state_dict"]

    a, b = final(straight.output_dir), final(resumed.output_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)  # the same result as without the failure


FSDP_ON_CPU = ("trainer=fsdp", "trainer.accelerator=cpu", "trainer.devices=2")


@pytest.mark.slow
@pytest.mark.parametrize("strategy", [(), FSDP_ON_CPU], ids=["one-process", "fsdp-2-processes"])
def test_sigkill_at_random_moments_always_leaves_a_loadable_checkpoint(
    strategy, tmp_path, data_dir
):
    """The whole process group is killed (as a node dies): every `*.ckpt` left, a file or a
    sharded folder, is complete, and `resume=auto` continues from the newest."""
    rng = random.Random(0)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for trial in range(3):
        out = tmp_path / f"kill{trial}"
        args = cli(
            out,
            data_dir,
            *strategy,
            "trainer.max_steps=400",
            "callbacks.checkpoint.every_n_train_steps=1",
            "callbacks.checkpoint.keep_last=1",
        )
        process = subprocess.Popen(
            args,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        deadline = time.time() + 180
        while not list((out / "checkpoints").glob("*.ckpt")) and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(rng.uniform(0.1, 2.0))  # somewhere in the middle of writing checkpoints
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        checkpoints = sorted((out / "checkpoints").glob("*.ckpt"))
        assert checkpoints, "no checkpoint before the kill"
        for path in checkpoints:  # everything under a checkpoint name is complete
            assert read_lightning_checkpoint(path, sharded.TENSORS)["global_step"] >= 1
    newest = max((out / "checkpoints").glob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    target = read_lightning_checkpoint(newest, ())["global_step"] + 2
    resumed = subprocess.run(
        cli(out, data_dir, *strategy, "resume=auto", f"trainer.max_steps={target}"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads((out / "summary.json").read_text())["resume"]


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path, data_dir):
    out = tmp_path / "term"
    process = subprocess.Popen(
        cli(
            out, data_dir, "trainer.max_steps=400", "callbacks.checkpoint.every_n_train_steps=1000"
        ),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while _steps_logged(out) < 6 and time.time() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr[-2000:]
    assert "preempted (SIGTERM): checkpoint saved" in stderr
    state = read_lightning_checkpoint(out / "checkpoints" / "last.ckpt")
    assert 0 < state["global_step"] < 400
    resumed = subprocess.run(
        cli(out, data_dir, "resume=auto", f"trainer.max_steps={state['global_step'] + 2}"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads((out / "summary.json").read_text())["steps"] == state["global_step"] + 2


def test_gpu_check_runs_every_step_whatever_fails(tmp_path):
    """scripts/gpu_check.sh on a stand-in interpreter whose first check fails and which lacks
    flash-attn: the later steps still run, and the script fails at the end naming the step."""
    calls = tmp_path / "calls.txt"
    fake = tmp_path / "python"
    fake.write_text(
        "#!/usr/bin/env bash\n"
        f'echo "$*" >> {calls}\n'
        'case "$*" in *"import flash_attn"*) exit 1;; *pytest*) exit 3;; esac\n'
        "cat > /dev/null 2>&1 || true\n"
    )
    fake.chmod(0o755)
    smi = tmp_path / "bin" / "nvidia-smi"
    smi.parent.mkdir()
    smi.write_text("#!/usr/bin/env bash\necho 'NVIDIA H200, 143771 MiB, 570'\n")
    smi.chmod(0o755)
    result = subprocess.run(
        ["bash", "scripts/gpu_check.sh", str(tmp_path / "out")],
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "PYTHON": str(fake), "PATH": f"{smi.parent}:{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    ran = calls.read_text()
    assert "-m pytest" in ran and "-m cpt.train trainer=fsdp" in ran and "bench_train.py" in ran
    assert "model.attention=sdpa" in ran  # without flash-attn the sdpa paths run
    assert "== failed: 1. backend parity" in result.stdout


@pytest.mark.slow
@pytest.mark.distributed
def test_a_nan_on_one_rank_skips_the_step_on_every_rank(tmp_path, data_dir):
    """Two DDP processes, a NaN loss on rank 1 alone at step 1: no rank updates at step 1 (the
    flag is reduced across ranks), the other steps train, the weights stay finite."""
    out = tmp_path / "ddp"
    summary = train(
        out,
        data_dir,
        "trainer.max_steps=3",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "+trainer.strategy=ddp",
        "optim.on_nonfinite=skip",
        "callbacks.checkpoint.every_n_train_steps=1",
        "callbacks.checkpoint.keep_last=null",
        "+callbacks.nan._target_=tests.helpers.NaNOnRank",
    )
    assert summary["skipped_steps"] == 1
    after = [
        read_lightning_checkpoint(out / "checkpoints" / f"step{n:07d}.ckpt")["state_dict"]
        for n in (1, 2, 3)
    ]
    assert all(torch.isfinite(v).all() for state in after for v in state.values())
    assert all(torch.equal(after[0][k], after[1][k]) for k in after[0])  # step 1: no update
    assert not all(torch.equal(after[1][k], after[2][k]) for k in after[1])


@pytest.mark.slow
def test_skip_finished_leaves_a_finished_run_as_it_is(tmp_path, data_dir):
    """A grid launched again goes on where it stopped: with skip_finished=true a finished folder
    is left untouched and the run returns at once; without it the run is refused."""
    out = tmp_path / "job"
    train(out, data_dir, "trainer.max_steps=2")
    summary = out / "summary.json"
    before = (summary.read_bytes(), summary.stat().st_mtime_ns)
    again = subprocess.run(
        cli(out, data_dir, "trainer.max_steps=2", "skip_finished=true"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert (summary.read_bytes(), summary.stat().st_mtime_ns) == before
    refused = subprocess.run(
        cli(out, data_dir, "trainer.max_steps=2"), cwd=REPO, capture_output=True, text=True
    )
    assert refused.returncode == 2 and "already holds a finished run" in refused.stderr
