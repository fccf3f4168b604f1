"""Bad input is one line, before anything is written (cpt/run/build.py): callback values, options
that cannot act, combinations that cannot work, non-finite numbers."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cpt.config import ConfigError
from cpt.run.build import build
from cpt.train import run
from tests.helpers import REPO, cli


def test_missing_rewarm_and_bad_callback_values(tiny_run):
    with pytest.raises(ConfigError, match="exactly one Rewarm"):
        run(tiny_run("callbacks=[checkpoint]"))
    with pytest.raises(ConfigError, match="optimizer_state 'cold' unknown"):
        run(tiny_run("callbacks.rewarm.optimizer_state=cold"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.max_lr=-1", "optim.max_lr: expected a positive learning rate"),
        ("schedule.min_lr_ratio=1.5", "schedule.min_lr_ratio: expected a value in"),
        ("schedule.warmup=10", "schedule.warmup: 10 steps are longer than the run (3 steps)"),
        (
            "schedule.name=infinite schedule.cooldown=3 schedule.anneal=1",
            "schedule.cooldown: warmup + cooldown",
        ),
        ("model.name=pythia-7b", "model.name: unknown preset 'pythia-7b'"),
        ("model.attention=flash", "model.attention: flash needs a CUDA GPU"),
        ("model.attention=flesh", "model.attention: 'flesh' unknown"),
        ("model.loss=fused", "model.loss: 'fused' unknown"),
        ("trainer=fsdp", "trainer.accelerator: gpu requested but no CUDA device"),
        (
            "trainer=fsdp trainer.accelerator=cpu trainer.devices=2 trainer.strategy.shard_size=3",
            "trainer.strategy.shard_size: 3 (3 ranks per shard group) does not divide the world "
            "size 2",
        ),
        ("data.train=german", "data.train: 'german' is not a domain"),
        ("init=ckpt:/no/such.ckpt", "init: /no/such.ckpt: no such checkpoint file or folder"),
        ("init=hf", "init: 'hf' not understood"),
        (
            "callbacks=cpt callbacks.replay.fraction=1.5",
            "callbacks: callbacks.replay.fraction: expected a value in [0, 1]",
        ),
        (
            "data.global_batch_size=10",
            "data.global_batch_size: 10 is not divisible by micro_batch_size x devices x "
            "num_nodes = 4 x 1 x 1 = 4",
        ),
        (
            "trainer.accelerator=gpu",
            "trainer.accelerator: gpu requested but no CUDA device is available",
        ),
        (
            "data.domains.upstream.source=/no/such/*.jsonl",
            "data.domains.upstream.source: /no/such/*.jsonl: no such file",
        ),
        ("callbacks.rewarm.optimizer_state=cold", "callbacks: optimizer_state 'cold' unknown"),
        ("optim.on_nonfinite=ignore", "optim.on_nonfinite: expected stop or skip"),
        ("optim.betas=[0.9]", "optim.betas: expected two values in [0, 1)"),
        ("optim.betas=[0.9,1.0]", "optim.betas: expected two values in [0, 1)"),
        ("optim.eps=0", "optim.eps: expected a positive value"),
        ("optim.weight_decay=-0.1", "optim.weight_decay: expected a value >= 0"),
        ("trainer.val_check_interval=0", "trainer.val_check_interval: expected a batch count"),
        ("trainer.val_check_interval=1.5", "trainer.val_check_interval: expected a batch count"),
        ("trainer.log_every_n_steps=0", "trainer.log_every_n_steps: expected a step count"),
        ("trainer.gradient_clip_val=-1", "trainer.gradient_clip_val: expected a value >= 0"),
        ("trainer.precision=bf17-mixed", "trainer.precision: expected one of"),
        ("trainer.limit_val_batches=-2", "trainer.limit_val_batches: expected a batch count"),
        ("trainer.num_sanity_val_steps=-5", "trainer.num_sanity_val_steps: expected -1"),
        ("schedule.name=exponential", "schedule.name: unknown schedule 'exponential'"),
        ("data.seq_len=4096", "data.seq_len: 4096 exceeds the model's max_position_embeddings 512"),
    ],
)
def test_bad_values_fail_with_one_line_before_writing(tiny_run, tmp_path, override, message):
    cfg = tiny_run(*override.split())
    with pytest.raises(ConfigError) as err:
        run(cfg)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)
    assert not Path(cfg.output_dir).exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ("callbacks.rewarm.optimizer_state=load",),
            "callbacks.rewarm.optimizer_state: expected fresh or warm without a cpt checkpoint",
        ),
        (
            ("callbacks.rewarm.warm_steps=5",),
            "callbacks.rewarm.warm_steps: expected 0 unless optimizer_state=warm",
        ),
        (
            ("callbacks=cpt",),
            "callbacks.replay.source: upstream is the only domain the run trains on",
        ),
        (
            ("callbacks=[default,task_eval]", "callbacks.task_eval.tasks=[]"),
            "at least one lm-eval task",
        ),
        (("optim.max_lr=inf",), "optim.max_lr: expected a finite number, got inf"),
        (
            ("callbacks.replay.fraction=nan", "callbacks=cpt", "data.train=downstream"),
            "callbacks.replay.fraction: expected a finite number, got nan",
        ),  # fmt: skip
    ],
)
def test_options_that_cannot_act_and_combinations_that_cannot_work(tiny_run, overrides, message):
    """An option with nothing to act on, a replay of the very domain the run trains on (the
    shipped `callbacks=cpt` on the default data), a task callback without tasks, infinity."""
    with pytest.raises(ConfigError, match=message):
        build(tiny_run(*overrides))


def test_the_command_line_refuses_a_replay_of_the_trained_domain_before_writing(tmp_path, data_dir):
    done = subprocess.run(
        cli(tmp_path / "run", data_dir, "callbacks=cpt"), cwd=REPO, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2 and not (tmp_path / "run").exists()
    assert done.stderr.strip().splitlines() == [
        "error: callbacks.replay.source: upstream is the only domain the run trains on "
        "(data.train / data.mixture); expected another domain to replay, e.g. "
        "data.train=downstream callbacks.replay.source=upstream"
    ]
