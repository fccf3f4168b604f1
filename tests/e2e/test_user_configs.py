"""One's own experiment and data configs in one's own folder (`hydra.searchpath=[file://...]`):
`cpt.data.prepare`, `cpt.plan` and `cpt.train` (a grid) read them as they read the built-in ones;
a missing folder, or a file that a built-in one would hide, is one line before anything is written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO, write_jsonl

EXPERIMENT = """\
# @package _global_
defaults:
  - override /data: my_corpus
optim:
  max_lr: 7.0e-4
trainer:
  max_steps: 3
  val_check_interval: 3
"""


def _my_conf(root: Path) -> Path:
    """A user's folder: `data/my_corpus.yaml` (a JSON-lines file) and `experiment/my_cpt.yaml`."""
    words = [
        "rivers",
        "carry",
        "silt",
        "to",
        "the",
        "sea",
        "while",
        "the",
        "tide",
        "returns",
        "it",
        "twice",
        "a",
        "day",
    ]
    texts = [" ".join(words[(i + j) % len(words)] for j in range(50)) for i in range(60)]
    write_jsonl(root / "corpus.jsonl", texts, field="body")
    conf = root / "my_conf"
    (conf / "data").mkdir(parents=True)
    (conf / "experiment").mkdir()
    (conf / "data" / "my_corpus.yaml").write_text(
        yaml.safe_dump(
            {
                "dir": str(root / "data"),
                "tokenizer": "bpe:300",
                "train": "mine",
                "domains": {
                    "mine": {
                        "source": str(root / "corpus.jsonl"),
                        "text_field": "body",
                        "val_tokens": 256,
                    }
                },
                "seq_len": 32,
                "micro_batch_size": 4,
                "num_workers": 0,
            }
        )
    )
    (conf / "experiment" / "my_cpt.yaml").write_text(EXPERIMENT)
    return conf


def _run(module: str, *args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


@pytest.mark.slow  # three commands end to end: CI's slow run
def test_own_configs_prepare_plan_and_train(tmp_path):
    conf = _my_conf(tmp_path)
    search = f"hydra.searchpath=[file://{conf}]"

    done = _run("cpt.data.prepare", search, "data=my_corpus", f"hydra.run.dir={tmp_path / 'prep'}")
    assert done.returncode == 0, done.stderr[-2000:]
    (prepared,) = (tmp_path / "data").glob("corpus-*/meta.json")
    assert json.loads(prepared.read_text())["splits"]["train"]["documents"] > 50

    # a relative folder is read from the working directory, as Hydra reads it
    done = _run("cpt.plan", "hydra.searchpath=[file://my_conf]", "experiment=my_cpt",
                "plan.dir=plan", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    (plan,) = json.loads((tmp_path / "plan" / "plan.json").read_text())
    assert plan["total_steps"] == 3 and set(plan["tokens_per_source"]) == {"mine"}
    assert max(lr for _, lr in plan["lr"]) == pytest.approx(7e-4)

    sweep = tmp_path / "sweep"
    done = _run("cpt.train", "-m", search, "experiment=my_cpt", "logger=csv",
                "optim.max_lr=7e-4,5e-4", f"hydra.sweep.dir={sweep}",
                "trainer.enable_progress_bar=false")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    runs = sorted(p.parent for p in sweep.glob("*/summary.json"))
    assert len(runs) == 2, sorted(p.name for p in sweep.iterdir())
    assert not any("searchpath" in run.name for run in runs)  # the job folders name the grid only
    for run in runs:
        config = yaml.safe_load((run / "config.resolved.yaml").read_text())
        assert config["data"]["domains"]["mine"]["source"] == str(tmp_path / "corpus.jsonl")
        assert config["trainer"]["max_steps"] == 3
        summary = json.loads((run / "summary.json").read_text())
        assert summary["steps"] == 3 and "mine" in summary["final_val_loss"]
    assert {
        yaml.safe_load((r / "config.resolved.yaml").read_text())["optim"]["max_lr"] for r in runs
    } == {7e-4, 5e-4}


@pytest.mark.parametrize(
    "module",
    ["cpt.train", pytest.param("cpt.plan", marks=pytest.mark.slow),
     pytest.param("cpt.data.prepare", marks=pytest.mark.slow)],
)  # fmt: skip
def test_missing_folder_is_one_line(tmp_path, module):
    out = tmp_path / "out"
    done = _run(module, f"hydra.searchpath=[file://{tmp_path / 'nope'}]",
                f"hydra.run.dir={out}" if module != "cpt.plan" else f"plan.dir={out}")  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: hydra.searchpath: file://{tmp_path / 'nope'}: no such folder; expected a folder "
        "of your own configs (e.g. experiment/<name>.yaml, data/<name>.yaml), best named by its "
        "absolute path"
    ]
    assert not out.exists()


@pytest.mark.slow
def test_a_file_named_like_a_built_in_one_is_refused(tmp_path):
    """Hydra reads conf/ first: a user's experiment/demo_cpt.yaml would be ignored silently."""
    (tmp_path / "mine" / "experiment").mkdir(parents=True)
    (tmp_path / "mine" / "experiment" / "demo_cpt.yaml").write_text("# @package _global_\n")
    out = tmp_path / "out"
    done = _run("cpt.train", f"hydra.searchpath=[file://{tmp_path / 'mine'}]",
                "experiment=demo_cpt", f"hydra.run.dir={out}")  # fmt: skip
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "has the name of the built-in conf/experiment/demo_cpt.yaml" in line
    assert "rename it (e.g. experiment/my_demo_cpt.yaml)" in line
    assert not out.exists()
