"""Step 0 measured once for a grid (`cpt/start_measurements.py`): a run that starts from weights an
earlier run measured the same way reads the validation, the monitor's first point and the tasks'
first scores, and ends exactly where measuring them itself would have; anything that decides them
(the weights, what a kind measures) keeps them apart; a bad file is measured again."""

from __future__ import annotations

import csv
import json
import shutil

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("lm_eval")

from cpt.config import ConfigError  # noqa: E402
from cpt.preflight import build  # noqa: E402
from cpt.start_measurements import folder_of, weights_digest  # noqa: E402
from cpt.train import run  # noqa: E402

KINDS = ["validation", "stability_gap", "task_eval"]


@pytest.fixture
def grid(tiny_run, trained, data_dir):
    """A run of a grid continuing the trained checkpoint, measured at step 0 by every kind."""
    shutil.rmtree(folder_of(data_dir), ignore_errors=True)

    def make(out: str, *overrides: str) -> dict:
        return run(
            tiny_run(
                f"init=ckpt:{trained['ckpt']}",
                "model=from_init",
                "callbacks=[gap,task_eval]",
                "callbacks.task_eval.tasks=[cpt_test_mc]",
                f"callbacks.task_eval.include_path={trained['tasks']}",
                "callbacks.task_eval.limit=8",
                "callbacks.task_eval.every=3",
                "trainer.max_steps=4",
                *overrides,
                out=out,
            )
        )

    yield make
    shutil.rmtree(folder_of(data_dir), ignore_errors=True)


def _measured(summary: dict) -> dict:
    """Everything a run reports that its measurements decide."""
    return {
        "val": (summary["initial_val_loss"], summary["final_val_loss"]),
        "gap": summary["stability_gap"],
        "tasks": (summary["initial_tasks"], summary["final_tasks"], summary["task_gap"]),
    }


def _step0_rows(path) -> dict:
    """The metrics logged at step 0 (the CSV logger's file), but for the clock's (`perf/`)."""
    with open(path / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["step"] == "0"]
    return {k: v for r in rows for k, v in r.items() if v and not k.startswith("perf/")}


def test_a_grid_measures_step_0_once_and_ends_where_measuring_would(grid, tmp_path):
    alone = grid("alone", "seed=3")  # measures itself, shares nothing
    first = grid("first", "seed=2", "optim.max_lr=1e-3", "share_start_measurements=true")
    later = grid("later", "seed=3", "share_start_measurements=true")
    assert "start_measurements" not in alone
    assert first["start_measurements"] == {"read": [], "written": KINDS}
    assert later["start_measurements"] == {"read": KINDS, "written": []}
    # the same numbers bit for bit, at the start and at the end: reading changed nothing else
    assert _measured(later) == _measured(alone)
    assert _measured(first)["val"][0] == _measured(alone)["val"][0]
    assert _measured(first)["val"][1] != _measured(alone)["val"][1]  # another seed and LR
    assert later["task_eval"]["evaluations"] == alone["task_eval"]["evaluations"] - 1
    logged = _step0_rows(tmp_path / "later")
    assert logged == _step0_rows(tmp_path / "alone")
    assert {"val/upstream/loss", "stability_gap/upstream/loss", "task/cpt_test_mc/acc"} <= set(
        logged
    )


def test_what_decides_a_measurement_keeps_runs_apart(grid, data_dir, tiny_run):
    grid("first", "share_start_measurements=true")
    other_batches = grid(
        "batches", "share_start_measurements=true", "callbacks.stability_gap.batches=1"
    )
    assert other_batches["start_measurements"] == {
        "read": ["validation", "task_eval"],
        "written": ["stability_gap"],
    }
    other_limit = grid("limit", "share_start_measurements=true", "callbacks.task_eval.limit=6")
    assert other_limit["start_measurements"]["written"] == ["task_eval"]
    # other starting weights: the same config from scratch measures everything itself
    scratch = grid("scratch", "share_start_measurements=true", "init=scratch", "model=tiny")
    assert scratch["start_measurements"] == {"read": [], "written": KINDS}


def test_an_unreadable_measurement_is_measured_again_and_replaced(grid, data_dir):
    grid("first", "share_start_measurements=true")
    files = sorted(folder_of(data_dir).glob("validation-*.json"))
    assert len(files) == 1
    files[0].write_text('{"value": [[1.0')  # cut short
    again = grid("again", "share_start_measurements=true")
    assert again["start_measurements"] == {
        "read": ["stability_gap", "task_eval"],
        "written": ["validation"],
    }
    assert json.loads(files[0].read_text())["value"][0][1] > 0  # whole again: (sum, windows)


def test_a_file_where_the_shared_folder_goes_is_one_line_before_training(tiny_run, data_dir):
    folder = folder_of(data_dir)
    shutil.rmtree(folder, ignore_errors=True)
    folder.write_text("not a folder")
    try:
        with pytest.raises(ConfigError, match="share_start_measurements: .* is a file; expected"):
            build(tiny_run("share_start_measurements=true"))
        build(tiny_run())  # not shared: not checked
    finally:
        folder.unlink()


@settings(max_examples=30, deadline=None)
@given(
    shapes=st.lists(st.tuples(st.integers(1, 5), st.integers(1, 5)), min_size=1, max_size=4),
    dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float64]),
    data=st.data(),
)
def test_the_weights_digest_tells_any_change_apart(shapes, dtype, data):
    torch.manual_seed(0)
    model = torch.nn.Sequential(*(torch.nn.Linear(i, o).to(dtype) for i, o in shapes))
    before = weights_digest(model)
    copy = torch.nn.Sequential(*(torch.nn.Linear(i, o).to(dtype) for i, o in shapes))
    copy.load_state_dict(model.state_dict())
    assert weights_digest(copy) == before  # the same bytes, another object
    params = list(model.parameters())
    param = params[data.draw(st.integers(0, len(params) - 1))]
    index = data.draw(st.integers(0, param.numel() - 1))
    bits = {torch.float32: torch.int32, torch.bfloat16: torch.int16, torch.float64: torch.int64}
    with torch.no_grad():
        param.view(-1).view(bits[dtype])[index] += 1  # one unit in the last place
    assert weights_digest(model) != before
