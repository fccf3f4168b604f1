"""One batch geometry: validation accepts a config exactly when the run builds its schedule, and
everything that needs the numbers (schedule, mixture, trainer, resolver, summary) reads the same."""

from __future__ import annotations

import math

import pytest

from cpt.config import ConfigError
from cpt.run.build import build
from cpt.run.geometry import BatchGeometry, count_devices
from tests.conftest import compose_train


@pytest.mark.parametrize(
    ("devices", "count"), [(3, 3), ("2", 2), ([0, 1], 2), ("auto", 1), (-1, 1)]
)
def test_device_counts_as_lightning_reads_them_on_a_cpu(devices, count):
    assert count_devices(devices, "cpu") == count


@pytest.mark.parametrize(
    ("data", "trainer", "message"),
    [
        ({"global_batch_size": 10}, {}, "data.global_batch_size: 10 is not divisible"),
        (
            {"global_batch_size": 16},
            {"accumulate_grad_batches": 3},
            "trainer.accumulate_grad_batches: 3 contradicts data.global_batch_size=16",
        ),
        ({}, {"max_steps": 0}, "trainer.max_steps: expected a positive step count"),
        ({}, {"devices": 0}, "trainer.devices: expected a positive count"),
        ({"micro_batch_size": 0}, {}, "data.micro_batch_size: expected a positive integer"),
    ],
)
def test_bad_geometry_names_the_key(data, trainer, message):
    from types import SimpleNamespace

    values = {"micro_batch_size": 4, "seq_len": 32, "global_batch_size": None, **data}
    with pytest.raises(ValueError, match=f"^{message}"):
        BatchGeometry.from_config(SimpleNamespace(**values), {"max_steps": 5, **trainer})


def test_geometry_numbers():
    g = BatchGeometry(
        micro_batch_size=6, devices=8, num_nodes=2, accumulate=23, seq_len=2048, max_steps=10
    )
    assert g.global_batch == 6 * 8 * 2 * 23 and g.world_size == 16
    assert g.tokens_per_step == g.global_batch * 2048
    assert math.isclose(g.to_dict()["total_tokens"], g.tokens_per_step * 10)


def test_a_budget_in_tokens_sets_the_steps(tmp_path):
    cfg = compose_train(
        [
            "trainer.max_steps=null",
            "trainer.max_tokens=1000000",
            "data.micro_batch_size=4",
            "trainer.accumulate_grad_batches=2",
            f"output_dir={tmp_path}",
        ]
    )
    built = build(cfg)
    assert built.geometry.max_steps == round(1e6 / (4 * 2 * 128)) == 977
    assert built.trainer_args["max_steps"] == 977 and "max_tokens" not in built.trainer_args


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["trainer.max_tokens=1000000"], "trainer.max_tokens: 1000000 given together with"),
        (["trainer.max_steps=null", "trainer.max_tokens=100"], "trainer.max_tokens: 100 tokens"),
        (["trainer.max_steps=null"], "trainer.max_steps: expected a positive step count"),
    ],
)
def test_a_run_length_is_given_once(overrides, message, tmp_path):
    with pytest.raises(ConfigError, match=f"^{message}"):
        build(compose_train([*overrides, f"output_dir={tmp_path}"]))
