"""One batch geometry: validation accepts a config exactly when the run builds its schedule, and
everything that needs the numbers (schedule, mixture, trainer, resolver, summary) reads the same."""

from __future__ import annotations

import lightning as L
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cpt.callbacks import Rewarm
from cpt.config import ConfigError, validate
from cpt.data.datamodule import CPTDataModule
from cpt.run.build import build
from cpt.schedules import ScheduleSpec
from cpt.schedules import build as build_schedule
from tests.conftest import compose_train


def _rewarm(built) -> Rewarm:
    (rewarm,) = [c for c in built.callbacks if isinstance(c, Rewarm)]
    return rewarm


def test_the_paper_budget_in_tokens_validates_and_builds_the_schedule_that_runs(tmp_path):
    """Ibrahim et al.'s infinite schedule with its phases in tokens: 1B warm-up, 59B cool-down."""
    cfg = compose_train(
        [
            "experiment=ibrahim2024_infinite",
            "schedule.unit=tokens",
            "schedule.warmup=1000000000",
            "schedule.cooldown=59000000000",
            "init=scratch",  # no hub access in a test: the architecture is the preset's
            "trainer.accelerator=cpu",
            "trainer.precision=32-true",
            f"output_dir={tmp_path}",
        ]
    )
    built = build(cfg)
    g = built.geometry
    assert (g.global_batch, g.accumulate, g.tokens_per_step) == (1104, 23, 1104 * 2048)
    assert g.max_steps == round(100e9 / (1104 * 2048)) == 44228  # the recipe's 100B tokens
    warmup, cooldown = round(1e9 / g.tokens_per_step), round(59e9 / g.tokens_per_step)
    assert (warmup, cooldown) == (442, 26095)
    lr, max_lr = _rewarm(built).lr_at, cfg.optim.max_lr
    assert lr(warmup) == pytest.approx(max_lr)  # the warm-up ends at step 442
    constant = cfg.schedule.constant_lr_ratio * max_lr
    assert lr(warmup + cooldown) == pytest.approx(constant)  # the cool-down ends 26,095 later
    assert lr(warmup + cooldown - 100) > constant
    assert built.trainer_args["accumulate_grad_batches"] == 23


GEOMETRY = st.fixed_dictionaries(
    {
        "micro": st.integers(1, 8),
        "devices": st.integers(1, 8),
        "nodes": st.integers(1, 3),
        "accumulate": st.integers(1, 6),
        "by_global_batch": st.booleans(),
        "seq_len": st.sampled_from([16, 100, 128, 512]),
        "steps": st.integers(1, 5000),
        "unit": st.sampled_from(["steps", "tokens"]),
        "name": st.sampled_from(["cosine", "infinite", "wsd", "inverse_sqrt"]),
        "warmup": st.integers(0, 3_000_000),
        "cooldown": st.integers(0, 20_000_000),
    }
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(g=GEOMETRY)
def test_validation_accepts_exactly_when_the_run_builds_its_schedule(g, tmp_path):
    per_pass = g["micro"] * g["devices"] * g["nodes"]
    overrides = [
        f"data.micro_batch_size={g['micro']}",
        f"data.seq_len={g['seq_len']}",
        f"trainer.devices={g['devices']}",
        f"trainer.num_nodes={g['nodes']}",
        f"trainer.max_steps={g['steps']}",
        f"schedule.name={g['name']}",
        f"schedule.unit={g['unit']}",
        f"schedule.warmup={g['warmup']}",
        f"schedule.cooldown={g['cooldown']}",
        "schedule.anneal=0",
        "schedule.decay=0.1",
        "trainer.accelerator=cpu",
        f"output_dir={tmp_path}",
    ]
    if g["by_global_batch"]:
        overrides.append(f"data.global_batch_size={per_pass * g['accumulate']}")
    else:
        overrides.append(f"trainer.accumulate_grad_batches={g['accumulate']}")
    cfg = compose_train(overrides)
    # the numbers from first principles, not from cpt.run.geometry
    tokens_per_step = per_pass * g["accumulate"] * g["seq_len"]
    spec = ScheduleSpec(
        name=g["name"],
        unit=g["unit"],
        warmup=g["warmup"],
        cooldown=g["cooldown"],
        anneal=0,
        decay=0.1,
    )
    try:
        expected = build_schedule(
            spec, max_lr=1.0, total_steps=g["steps"], tokens_per_step=tokens_per_step
        )
    except ValueError:
        expected = None
    try:
        built = build(cfg)
    except ConfigError as err:
        assert expected is None, f"rejected a config whose schedule builds: {err}"
        assert str(err).startswith("schedule.")
        return
    assert expected is not None, "accepted a config whose schedule does not build"
    geometry = built.geometry
    assert geometry.tokens_per_step == tokens_per_step
    assert geometry.total_tokens == tokens_per_step * g["steps"]
    assert built.trainer_args["accumulate_grad_batches"] == g["accumulate"]
    rewarm = _rewarm(built)
    for step in {0, 1, g["steps"] // 3, g["steps"] // 2, g["steps"] - 1}:
        assert rewarm.lr_at(step) == pytest.approx(expected(step) * cfg.optim.max_lr)
    # the datamodule's mixture takes its global batch from the same object
    data = CPTDataModule(validate(cfg).data, geometry, cfg.seed)
    assert data.geometry.global_batch == per_pass * g["accumulate"]


@pytest.mark.parametrize(("devices", "nodes", "accumulate"), [(1, 1, 3), (2, 1, 1), (4, 2, 2)])
def test_the_trainer_runs_the_geometry(devices, nodes, accumulate, tmp_path):
    cfg = compose_train(
        [
            "trainer.accelerator=cpu",
            f"trainer.devices={devices}",
            f"trainer.num_nodes={nodes}",
            f"trainer.accumulate_grad_batches={accumulate}",
            f"output_dir={tmp_path}",
        ]
    )
    built = build(cfg)
    trainer = L.Trainer(**built.trainer_args, logger=False, enable_checkpointing=False)
    assert trainer.world_size == built.geometry.world_size == devices * nodes
    assert trainer.accumulate_grad_batches == built.geometry.accumulate == accumulate


def test_run_tokens_resolver_reads_the_geometry(tmp_path):
    cfg = compose_train(
        [
            "+mitigation=subcorpus",
            "data.train=downstream",
            "data.micro_batch_size=4",
            "trainer.accumulate_grad_batches=3",
            "trainer.max_steps=10",
            f"output_dir={tmp_path}",
        ]
    )
    assert cfg.data.domains.downstream.max_tokens == validate(cfg).geometry.total_tokens // 4
    assert validate(cfg).geometry.total_tokens == 4 * 3 * 128 * 10


def test_summary_records_the_geometry(tiny_run):
    from cpt.train import run

    summary = run(tiny_run("trainer.max_steps=2", "trainer.accumulate_grad_batches=2"))
    assert summary["geometry"]["tokens_per_step"] == 4 * 2 * 32
    assert summary["tokens"] == summary["geometry"]["total_tokens"] == 2 * 4 * 2 * 32
