"""A grid on a SLURM launcher is checked before anything is submitted (cpt/scale/submit.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cpt.config import ConfigError
from cpt.scale.submit import check_grid
from tests.conftest import compose_train
from tests.helpers import REPO


def grid(*overrides: str):
    from hydra import compose, initialize_config_dir

    from tests.conftest import CONF

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(
            "train", overrides=["output_dir=/tmp/x", *overrides], return_hydra_config=True
        )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("hydra/launcher=slurm_cpu",), "resume: null on a SLURM launcher; expected resume=auto"),
        (("cluster=slurm_cpu", "resume=/some/run/last.ckpt"), "names one checkpoint for every job"),
    ],
)
def test_a_grid_that_would_not_resume_its_own_jobs_is_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        check_grid(grid(*overrides))


def test_other_launchers_are_not_checked():
    check_grid(grid("hydra/launcher=joblib"))
    assert compose_train(["output_dir=/tmp/x", "cluster=slurm_cpu"]).resume == "auto"


def test_the_command_line_refuses_it_in_one_line_and_submits_nothing(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "cpt.train", "-m", "hydra/launcher=slurm_cpu", "seed=1,2",
         f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: resume: null on a SLURM launcher; expected resume=auto (or cluster=slurm): its "
        "jobs are requeued at their time limit and each resumes its own folder"
    ]
    assert not (tmp_path / "sweep").exists()
