"""The CPT techniques as callbacks: re-warming and optimizer states, replay, stability gap, drift."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from cpt.callbacks import PartialFreeze, Replay
from cpt.callbacks.stability_gap import eval_steps, gap_metrics
from cpt.callbacks.throughput import flops_per_token, model_flops_per_token
from cpt.checkpoints import read_lightning_checkpoint
from cpt.config import ConfigError
from cpt.models.presets import config_from_name
from cpt.train import run


def metric(out: str, key: str) -> list[tuple[int, float]]:
    with (Path(out) / "metrics.csv").open() as handle:
        return [(int(r["step"]), float(r[key])) for r in csv.DictReader(handle) if r.get(key)]


def adam(checkpoint: Path) -> dict:
    return read_lightning_checkpoint(checkpoint)["optimizer_states"][0]["state"]


# ---- stability-gap metrics on synthetic curves -------------------------------------------------
def test_gap_that_recovers_at_a_known_step():
    m = gap_metrics([0, 1, 2, 3, 4, 5], [2.0, 3.0, 4.0, 2.5, 2.0, 1.5])
    assert (m["initial"], m["peak"], m["peak_step"], m["recovery_step"], m["final"]) == (
        2.0,
        4.0,
        2,
        4,
        1.5,
    )
    assert m["gap_area"] == pytest.approx(0.5 + 1.5 + 1.25 + 0.25)  # trapezoids above 2.0


def test_gap_that_never_recovers():
    m = gap_metrics([0, 10, 20, 30], [2.0, 3.0, 2.8, 2.6])
    assert m["recovery_step"] is None and m["peak_step"] == 10
    assert m["gap_area"] == pytest.approx(10 * (1.0 + 0.8) / 2 + 10 * (0.8 + 0.6) / 2 + 0 + 5)


def test_no_gap():
    m = gap_metrics([0, 1, 2], [2.0, 1.9, 1.7])
    assert (m["peak"], m["peak_step"], m["recovery_step"], m["gap_area"]) == (2.0, 0, 0, 0.0)


def test_gap_area_counts_only_the_part_above_the_start():
    m = gap_metrics([0, 2], [1.0, 3.0])  # wait: crossing inside a segment
    assert m["gap_area"] == pytest.approx(2.0)
    crossing = gap_metrics([0, 2, 4], [1.0, 2.0, 0.0])  # up 1 then down to 1 below: triangle of 2
    assert crossing["gap_area"] == pytest.approx(1.0 + 0.5)
    assert crossing["recovery_step"] == 4


def test_the_gap_is_the_first_excursion_not_a_later_rise():
    """Guo et al.'s gap: up at step 10, back at step 20; the rise at step 30 is something else."""
    m = gap_metrics([0, 10, 20, 30], [2.0, 2.5, 1.9, 2.6])
    assert (m["peak"], m["peak_step"], m["recovery_step"]) == (2.5, 10, 20)
    assert (m["worst"], m["worst_step"]) == (2.6, 30)
    assert m["forgetting"] == pytest.approx(0.6)
    # a triangle up to step 10, then down to the crossing at 10 + 10 x 0.5 / 0.6
    assert m["gap_area"] == pytest.approx(10 * 0.5 / 2 + (10 * 0.5 / 0.6) * 0.5 / 2)


def test_an_accuracy_gap_is_a_drop():
    m = gap_metrics([0, 5, 10, 15, 20], [0.50, 0.40, 0.45, 0.55, 0.30], higher_is_better=True)
    assert (m["peak"], m["peak_step"], m["recovery_step"]) == (0.40, 5, 15)
    assert (m["worst"], m["worst_step"]) == (0.30, 20)
    assert m["forgetting"] == pytest.approx(-0.2)
    assert m["gap_area"] == pytest.approx(5 * 0.1 / 2 + 5 * (0.1 + 0.05) / 2 + 2.5 * 0.05 / 2)


def test_a_gap_within_the_monitors_noise_says_so():
    steps, losses = [0, 1, 2], [2.0, 2.01, 1.9]
    assert gap_metrics(steps, losses, stderrs=[0.02, 0.02, 0.02])["within_noise"] is True
    assert gap_metrics(steps, losses, stderrs=[0.001, 0.001, 0.001])["within_noise"] is False


@given(
    st.lists(st.floats(0.5, 5.0, allow_nan=False), min_size=2, max_size=30),
    st.lists(st.floats(0.5, 5.0, allow_nan=False), min_size=0, max_size=10),
    st.booleans(),
)
def test_what_comes_after_the_recovery_changes_nothing_of_the_gap(values, later, accuracy):
    steps = list(range(0, 5 * len(values), 5))
    m = gap_metrics(steps, values, higher_is_better=accuracy)
    sign = -1 if accuracy else 1
    assert m["gap_area"] >= 0 and sign * (m["peak"] - m["initial"]) >= 0
    if m["recovery_step"] not in (None, 0):
        assert m["recovery_step"] > m["peak_step"] > 0
        cut = steps.index(m["recovery_step"]) + 1
        longer = values[:cut] + later
        again = gap_metrics(list(range(0, 5 * len(longer), 5)), longer, higher_is_better=accuracy)
        gap = ("peak", "peak_step", "recovery_step")
        assert [again[k] for k in gap] == [m[k] for k in gap]
        assert again["gap_area"] == pytest.approx(m["gap_area"])
        between = values[steps.index(m["peak_step"]) : cut - 1]
        assert all(sign * (v - m["initial"]) > 0 for v in between)  # worse until it recovers


def test_dense_then_sparse_schedule():
    steps = eval_steps([[20, 1], [200, 5]], 50, 400)
    assert set(range(21)) <= steps and {25, 30, 195, 200, 250, 400} <= steps
    assert 21 not in steps and 205 not in steps and 260 not in steps


# ---- replay fraction schedules ------------------------------------------------------------------
def test_replay_fraction_schedules():
    constant = Replay(fraction=0.25)
    assert constant.fraction_at(0) == constant.fraction_at(999) == 0.25
    decaying = Replay(fraction=0.5, end_fraction=0.0)
    decaying.total_steps = 100
    assert [decaying.fraction_at(s) for s in (0, 50, 100)] == pytest.approx([0.5, 0.25, 0.0])
    late = Replay(source="code", fraction=0.1, end_fraction=0.3, start=0.85, end=0.85)  # upsampling
    late.total_steps = 100
    assert (late.fraction_at(84), late.fraction_at(85), late.fraction_at(99)) == (0.1, 0.3, 0.3)
    with pytest.raises(ValueError, match="expected a value in"):
        Replay(fraction=1.5)


def test_flops_per_token():
    assert flops_per_token(1000, 2, 8, 16) == 6 * 1000 + 12 * 2 * 8 * 16


@pytest.mark.parametrize("preset", ["tiny", "tiny-llama"])
def test_flops_per_token_equal_torchs_own_count(preset):
    """An independent count: torch's FlopCounterMode over one forward and backward (eager
    attention and the plain loss, whose every matmul it sees; causal attention counted whole)."""
    from torch.utils.flop_counter import FlopCounterMode

    from cpt.models.registry import build_model

    config = config_from_name(preset)
    model = build_model(config, attention="eager")
    model.set_loss("plain")
    ids = torch.randint(0, config.vocab_size, (2, 65))
    with FlopCounterMode(display=False) as counter:
        loss, _ = model(ids[:, :-1], None, None, ids[:, 1:])
        loss.backward()
    assert model_flops_per_token(config, 64) == counter.get_total_flops() / (2 * 64)


def test_logged_mfu_is_the_measured_rate_over_the_peak(tiny_run):
    cfg = tiny_run("callbacks.throughput.peak_tflops=1", "callbacks.throughput.window=2")
    run(cfg)
    with (Path(cfg.output_dir) / "metrics.csv").open() as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("perf/mfu")]
    assert rows
    per_token = model_flops_per_token(config_from_name("tiny"), cfg.data.seq_len)
    for r in rows:
        rate = float(r["perf/tokens_per_s"]) * per_token
        assert float(r["perf/mfu"]) == pytest.approx(rate / 1e12, rel=1e-6)


# ---- optimizer state at the start of CPT -------------------------------------------------------
@pytest.fixture
def upstream_checkpoint(tiny_run) -> Path:
    cfg = tiny_run("trainer.max_steps=3", out="up")
    run(cfg)
    return Path(cfg.output_dir) / "checkpoints" / "last.ckpt"


def test_optimizer_state_fresh_load_warm(tiny_run, upstream_checkpoint):
    upstream = adam(upstream_checkpoint)
    base = [f"init=ckpt:{upstream_checkpoint}", "data.train=downstream", "schedule.warmup=0"]

    fresh = tiny_run(*base, "trainer.max_steps=2", out="fresh")
    run(fresh)
    assert int(adam(Path(fresh.output_dir) / "checkpoints/last.ckpt")[0]["step"]) == 2

    load = tiny_run(
        *base,
        "trainer.max_steps=2",
        "callbacks.rewarm.optimizer_state=load",
        "optim.weight_decay=0.0",
        "optim.betas=[0.8,0.9]",
        "optim.eps=1e-6",
        out="load",
    )
    run(load)
    saved = read_lightning_checkpoint(Path(load.output_dir) / "checkpoints/last.ckpt")
    state = saved["optimizer_states"][0]["state"]
    assert int(state[0]["step"]) == int(upstream[0]["step"]) + 2  # continued the upstream moments
    groups = saved["optimizer_states"][0]["param_groups"]
    upstream_groups = read_lightning_checkpoint(upstream_checkpoint)["optimizer_states"][0]
    assert upstream_groups["param_groups"][0]["weight_decay"] == 0.1  # what `load` must not take
    assert [(g["weight_decay"], tuple(g["betas"]), g["eps"]) for g in groups] == [
        (0.0, (0.8, 0.9), 1e-6)
    ] * 2  # this run's settings

    warm = tiny_run(
        *base,
        "trainer.max_steps=3",
        "callbacks.rewarm.optimizer_state=warm",
        "callbacks.rewarm.warm_steps=2",
        "callbacks.checkpoint.every_n_train_steps=2",
        out="warm",
    )
    run(warm)
    lrs = [v for _, v in metric(warm.output_dir, "train/lr")]
    assert lrs[:3] == pytest.approx([0.0, 0.0, 3e-4])
    after_warm = read_lightning_checkpoint(Path(warm.output_dir) / "checkpoints/step0000002.ckpt")
    start = read_lightning_checkpoint(upstream_checkpoint)["state_dict"]
    assert all(torch.equal(after_warm["state_dict"][k], v) for k, v in start.items())  # not moved
    moments = after_warm["optimizer_states"][0]["state"]
    assert int(moments[0]["step"]) == 2 and moments[0]["exp_avg_sq"].abs().sum() > 0  # but filled


def test_missing_rewarm_and_bad_callback_values(tiny_run):
    with pytest.raises(ConfigError, match="exactly one Rewarm"):
        run(tiny_run("callbacks=[checkpoint]"))
    with pytest.raises(ConfigError, match="optimizer_state 'cold' unknown"):
        run(tiny_run("callbacks.rewarm.optimizer_state=cold"))


# ---- a short CPT run with every callback -------------------------------------------------------
def test_cpt_run_with_every_callback(tiny_run, upstream_checkpoint):
    cfg = tiny_run(
        f"init=ckpt:{upstream_checkpoint}",
        "data.train=downstream",
        "callbacks=[cpt,weight_drift]",
        "callbacks.replay.fraction=0.25",
        "callbacks.stability_gap.dense=[[4,1]]",
        "callbacks.stability_gap.every=3",
        "callbacks.stability_gap.batches=2",
        "callbacks.weight_drift.every=2",
        "callbacks.throughput.peak_tflops=1",
        "trainer.max_steps=8",
        out="cpt",
    )
    summary = run(cfg)
    out = Path(cfg.output_dir)
    assert summary["tokens_per_source"] == {
        "downstream": 24 * 32,
        "upstream": 8 * 32,
    }  # 25 % replay
    fractions = [v for _, v in metric(cfg.output_dir, "replay/fraction")]
    assert len(fractions) == 8 and sum(fractions) / 8 == pytest.approx(0.25)
    gap = summary["stability_gap"]
    assert set(gap) == {"upstream", "downstream"}
    keys = {"initial", "peak", "peak_step", "recovery_step", "gap_area", "final", "forgetting"}
    for name, m in gap.items():
        assert keys | {"worst", "worst_step", "stderr", "within_noise"} == set(m)
        curve = metric(cfg.output_dir, f"stability_gap/{name}/loss")
        again = gap_metrics([s for s, _ in curve], [v for _, v in curve])  # from the logged curve
        assert {k: m[k] for k in keys} == pytest.approx({k: again[k] for k in keys}, nan_ok=True)
        for key in ("peak", "gap_area", "forgetting"):  # and what the callback logged at the end
            assert metric(cfg.output_dir, f"stability_gap/{name}/{key}")[-1][1] == pytest.approx(
                m[key]
            )
        assert 0 < m["stderr"] < 1
    steps = [s for s, _ in metric(cfg.output_dir, "stability_gap/upstream/loss")]
    assert steps == [0, 1, 2, 3, 4, 7, 8]  # dense then sparse, plus the last step
    assert gap["upstream"]["initial"] == pytest.approx(
        metric(cfg.output_dir, "stability_gap/upstream/loss")[0][1]
    )
    assert (out / "stability_gap.png").stat().st_size > 10_000
    assert summary["weight_drift"]["layers.0.attention"] > 0
    assert {"perf/tokens_per_s", "perf/mfu"} <= set(
        next(csv.DictReader((out / "metrics.csv").open()))
    )
    assert json.loads((out / "summary.json").read_text())["stability_gap"] == gap


def test_half_fine_tuning_freezes_half_of_every_block(tiny_run, upstream_checkpoint):
    cfg = tiny_run(
        f"init=ckpt:{upstream_checkpoint}", "callbacks=[default,partial_freeze]", out="hft"
    )
    summary = run(cfg)
    frozen = [n for n in summary["frozen_parameters"] if n.endswith(".weight")]
    assert len(frozen) == 4 * 2  # 4 matrices per block, 4 blocks, half frozen
    before = read_lightning_checkpoint(upstream_checkpoint)["state_dict"]
    after = read_lightning_checkpoint(Path(cfg.output_dir) / "checkpoints/last.ckpt")["state_dict"]
    for name in summary["frozen_parameters"]:
        assert torch.equal(before[f"model.{name}"], after[f"model.{name}"])
    assert not torch.equal(before["model.embed_in.weight"], after["model.embed_in.weight"])


def test_trainable_patterns():
    freeze = PartialFreeze(trainable=[r"\.mlp\."])
    names = [
        "embed_in.weight",
        "layers.0.mlp.dense_h_to_4h.weight",
        "layers.0.attention.dense.weight",
    ]
    assert freeze.choose_frozen(names) == ["embed_in.weight", "layers.0.attention.dense.weight"]
