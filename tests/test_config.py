"""Every option of the schedule and callbacks groups composes, validates and builds."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from cpt.callbacks import Rewarm
from cpt.config import ConfigError, validate
from cpt.run.build import build
from cpt.train import run
from tests.conftest import CONF, SMALL_DATA, compose_train

REPO = Path(__file__).resolve().parents[1]


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


def test_init_and_resume_together_is_an_error(tiny_run, tmp_path):
    fake = tmp_path / "x.ckpt"
    fake.write_bytes(b"")
    with pytest.raises(ConfigError, match="^resume: given together with init=ckpt:"):
        run(tiny_run(f"init=ckpt:{fake}", f"resume={fake}"))
    assert not (tmp_path / "run").exists()


def test_mandatory_values_are_named(tmp_path):
    base = ["data=jsonl", f"output_dir={tmp_path / 'run'}"]
    with pytest.raises(
        ConfigError, match=r"^data.domains.downstream.source: no value given \(\?\?\?\)"
    ):
        run(compose_train(base))
    with pytest.raises(ConfigError, match="^data.tokenizer: no value given"):
        run(compose_train([*base, "data.domains.downstream.source=x.jsonl"]))
    assert not (tmp_path / "run").exists()


def test_typo_in_a_key_fails_at_compose_time(tmp_path):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="Could not override 'optim.max_lrr'"):
        compose_train(["optim.max_lrr=1e-3", "output_dir=/tmp/x"])
    # a typo inside a config file (here: a user's own experiment) fails against the schema too
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "mine.yaml").write_text(
        "# @package _global_\nschedule:\n  warmpu: 5\n"
    )
    with pytest.raises(Exception, match="Key 'warmpu' not in 'ScheduleSpec'"):
        compose_train(
            [f"hydra.searchpath=[file://{tmp_path}]", "experiment=mine", "output_dir=/tmp/x"]
        )
    with pytest.raises(Exception, match="Error merging override seed=soon"):
        compose_train(["trainer.max_steps=3", "seed=soon", "output_dir=/tmp/x"])


def test_small_data_overrides_compose():
    cfg = compose_train([*SMALL_DATA, "output_dir=/tmp/x"])
    assert cfg.data.domains.upstream.max_docs == 40 and cfg.model.name == "tiny"
