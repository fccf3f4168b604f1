"""The speed and memory options change nothing but speed and memory: chunked loss, attention
backends, activation checkpointing, torch.compile (and its fallback)."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cpt.checkpoints.files import read_lightning_checkpoint
from cpt.train import run

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "options", [["model=tiny-llama", "model.activation_checkpointing=true"], []]
)
def test_bf16_mixed_training_run_on_cpu(tiny_run, options):
    """Lightning's bf16-mixed on a CPU (autocast matmuls, fp32 weights and optimizer) trains as
    fp32 does: the trained domain's loss falls, and ends within 1 % of the fp32 run's."""
    fp32 = run(tiny_run("trainer.max_steps=6", *options, out="fp32"))
    bf16 = run(
        tiny_run("trainer.precision=bf16-mixed", "trainer.max_steps=6", *options, out="bf16")
    )
    assert bf16["steps"] == 6
    trained = "upstream"  # tiny_run trains on the built-in upstream corpus
    assert bf16["final_val_loss"][trained] < bf16["initial_val_loss"][trained] - 0.05
    for domain, loss in bf16["final_val_loss"].items():
        assert loss == pytest.approx(fp32["final_val_loss"][domain], rel=0.01)


def metrics(out: Path) -> list[dict[str, str]]:
    with (out / "metrics.csv").open() as handle:
        return list(csv.DictReader(handle))


def adam_steps(checkpoint: Path) -> int:
    state = read_lightning_checkpoint(checkpoint)["optimizer_states"][0]["state"]
    return int(next(iter(state.values()))["step"])


def train_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`python -m cpt.train ARGS` as a user runs it, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "cpt.train", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_few_steps_write_summary_metrics_and_config(tiny_run):
    cfg = tiny_run()
    summary = run(cfg)
    out = Path(cfg.output_dir)
    written = json.loads((out / "summary.json").read_text())
    assert written == summary
    assert written["steps"] == 3 and written["tokens"] == 3 * 4 * 32
    for key in ("initial_val_loss", "final_val_loss"):
        assert set(written[key]) == {"upstream", "downstream"}
        assert all(math.isfinite(v) for v in written[key].values())
    # random init: about ln(vocab) at step 0
    assert abs(written["initial_val_loss"]["upstream"] - math.log(4096)) < 0.5
    rows = metrics(out)
    assert {
        "train/loss",
        "train/lr",
        "train/tokens",
        "val/upstream/loss",
        "val/downstream/ppl",
    } <= set(rows[0])
    assert (out / "config.resolved.yaml").is_file() and (out / "tokenizer.json").is_file()
    assert (out / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.parametrize(("steps", "validated_at"), [(4, [0, 2, 4]), (3, [0, 2, 3])])
def test_the_last_step_is_validated_once(tiny_run, steps, validated_at):
    """Validation every 2 steps: a run ending on a validation step reports that validation as its
    final loss instead of measuring the same weights again; one ending between them validates."""
    cfg = tiny_run(f"trainer.max_steps={steps}")
    summary = run(cfg)
    rows = [r for r in metrics(Path(cfg.output_dir)) if r.get("val/upstream/loss")]
    assert [float(r["val/tokens"]) for r in rows] == [step * 4 * 32 for step in validated_at]
    assert summary["final_val_loss"]["upstream"] == pytest.approx(
        float(rows[-1]["val/upstream/loss"])
    )


def test_ckpt_init_starts_cpt_while_resume_continues(tiny_run, tmp_path):
    upstream = tiny_run("trainer.max_steps=4", out="upstream")
    first = run(upstream)
    last = Path(upstream.output_dir) / "checkpoints" / "last.ckpt"
    assert adam_steps(last) == 4

    # init=ckpt: weights only. Step counter, schedule and optimizer start afresh.
    cpt = tiny_run(
        f"init=ckpt:{last}",
        "data.train=downstream",
        "trainer.max_steps=4",
        "schedule.warmup=2",
        out="cpt",
    )
    second = run(cpt)
    assert second["steps"] == 4 and second["tokens"] == 4 * 4 * 32
    assert second["initial_val_loss"] == pytest.approx(first["final_val_loss"])
    lrs = [float(r["train/lr"]) for r in metrics(Path(cpt.output_dir)) if r["train/lr"]]
    assert lrs[:3] == pytest.approx([0.0, 1.5e-4, 3e-4])  # re-warmed from 0
    assert adam_steps(Path(cpt.output_dir) / "checkpoints" / "last.ckpt") == 4

    # resume=: the full state. Steps, tokens and Adam's moments continue.
    resumed = tiny_run(f"resume={last}", "trainer.max_steps=6", out="resumed")
    third = run(resumed)
    assert third["steps"] == 6 and third["tokens"] == 6 * 4 * 32
    assert third["initial_val_loss"] == first["initial_val_loss"]  # kept in the checkpoint
    assert adam_steps(Path(resumed.output_dir) / "checkpoints" / "last.ckpt") == 6
    steps = [int(r["step"]) for r in metrics(Path(resumed.output_dir)) if r["train/loss"]]
    assert len(steps) == 2 and min(steps) >= 4  # only the two new steps were trained


def test_tokenizer_larger_than_model_vocab(tiny_run):
    cfg = tiny_run("data.tokenizer=bpe:8192")
    with pytest.raises(ValueError, match="do not fit the model's vocab_size 4096"):
        run(cfg)


def test_command_line_reports_bad_input_in_one_line(tmp_path, data_dir):
    result = train_cli(
        "logger=csv",
        "debug=fast",
        f"data.dir={data_dir}",
        f"hydra.run.dir={tmp_path / 'run'}",
        "optim.max_lr=0",
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: optim.max_lr: expected a positive learning rate, got 0.0"
    )
    assert "Traceback" not in result.stderr


def test_wandb_logs_offline_without_a_key(tiny_run, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", "/nonexistent")
    monkeypatch.setenv("HOME", str(Path(tiny_run().output_dir).parent))
    cfg = tiny_run("logger=wandb", "trainer.max_steps=2")
    run(cfg)
    runs = list((Path(cfg.output_dir) / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    assert (Path(cfg.output_dir) / "metrics.csv").is_file()  # the CSV logger rides along


def test_hf_init_trains_and_exports_back(tiny_run, tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    hf_config = transformers.GPTNeoXConfig(
        vocab_size=640,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=128,
    )
    transformers.GPTNeoXForCausalLM(hf_config).save_pretrained(tmp_path / "upstream_hf")
    cfg = tiny_run(
        f"init=hf:{tmp_path / 'upstream_hf'}", "model=from_init", "data.train=downstream"
    )
    summary = run(cfg)
    assert summary["steps"] == 3 and summary["parameters"] < 200_000

    from cpt.export import export

    exported = export(Path(cfg.output_dir) / "checkpoints" / "last.ckpt", tmp_path / "exported")
    assert (exported / "tokenizer.json").is_file()
    model = transformers.GPTNeoXForCausalLM.from_pretrained(exported).eval()
    state = read_lightning_checkpoint(Path(cfg.output_dir) / "checkpoints" / "last.ckpt")[
        "state_dict"
    ]
    assert torch.equal(model.gpt_neox.embed_in.weight, state["model.embed_in.weight"])

    mismatch = tiny_run(f"init=hf:{tmp_path / 'upstream_hf'}", "model=pythia-14m", out="mismatch")
    with pytest.raises(ValueError, match="model.name=pythia-14m disagrees"):
        run(mismatch)


def test_global_batch_size_sets_accumulation(tiny_run):
    summary = run(tiny_run("data.global_batch_size=8", "trainer.max_steps=2"))
    assert summary["tokens"] == 2 * 8 * 32  # micro-batch 4, accumulated twice


@pytest.mark.parametrize(
    ("overrides", "line"),
    [
        (["optim.max_lrr=1e-3"], "error: Could not override 'optim.max_lrr'."),
        pytest.param(
            ["seed=soon"], "error: Error merging override seed=soon", marks=pytest.mark.slow
        ),
        pytest.param(
            ["data.domains.upstream.source=/no/such.jsonl"],
            "error: data.domains.upstream.source: /no/such.jsonl: no such file",
            marks=pytest.mark.slow,
        ),
    ],
)  # one command line in the default run; the same path's other inputs in the slow one
def test_command_line_bad_inputs_exit_2_in_one_line(tmp_path, data_dir, overrides, line):
    result = train_cli(
        "logger=csv", f"data.dir={data_dir}", f"hydra.run.dir={tmp_path / 'run'}", *overrides
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(line), result.stderr
    assert not (tmp_path / "run").exists()


def test_only_hydra_full_error_1_shows_tracebacks(tmp_path, data_dir):
    """HYDRA_FULL_ERROR=0 is not set: bad input is still one line."""
    result = train_cli(
        f"data.dir={data_dir}",
        f"hydra.run.dir={tmp_path / 'run'}",
        "optim.max_lr=0",
        env={**os.environ, "HYDRA_FULL_ERROR": "0"},
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()
