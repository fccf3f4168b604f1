"""Every option of the schedule and callbacks groups composes, validates and builds."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from cpt.callbacks import Rewarm
from cpt.config import validate
from cpt.preflight import build
from tests.conftest import CONF, compose_train


@pytest.mark.parametrize("option", sorted(p.stem for p in (CONF / "schedule").glob("*.yaml")))
def test_every_schedule_option_validates(option, tmp_path):
    cfg = compose_train([f"schedule={option}", "trainer.max_steps=1000", f"output_dir={tmp_path}"])
    built = build(cfg)
    (rewarm,) = [c for c in built.callbacks if isinstance(c, Rewarm)]
    assert rewarm.spec == validate(cfg).schedule
    assert 0 <= rewarm.lr_at(500) <= cfg.optim.max_lr


@pytest.mark.parametrize("option", sorted(p.stem for p in (CONF / "callbacks").glob("*.yaml")))
def test_every_callback_option_instantiates(option):
    needs = {"task_eval": ["callbacks.task_eval.tasks=[piqa]"]}  # its one mandatory value
    cfg = compose_train(
        [f"callbacks=[default,{option}]", *needs.get(option, []), "output_dir=/tmp/x"]
    )
    built = [instantiate(entry) for entry in cfg.callbacks.values()]
    assert sum(isinstance(c, Rewarm) for c in built) == 1


def test_slurm_launcher_composes_with_submitit_parameters():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "hydra/launcher=slurm",
                "hydra.launcher.partition=gpu",
                "hydra.launcher.nodes=2",
            ],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert (
        launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    )
    assert (
        launcher.partition,
        launcher.nodes,
        launcher.gpus_per_node,
        launcher.tasks_per_node,
    ) == ("gpu", 2, 8, 8)
    assert launcher.timeout_min == 1440
