"""lm-evaluation-harness on our model: item by item the same as lm-eval's own `hf` model on the
exported checkpoint, for multiple-choice, rolling log-likelihood and greedy generation tasks of a
user's task folder; `python -m cpt.evaluate` and its bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("lm_eval")

from lm_eval import simple_evaluate  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

from cpt.models.registry import build_model  # noqa: E402
from cpt.run.initial import initial_model, load_into  # noqa: E402
from cpt.tasks.harness import HarnessLM  # noqa: E402
from cpt.tasks.index import task_manager  # noqa: E402
from cpt.train import run  # noqa: E402
from tests.conftest import SMALL_DATA, compose_train  # noqa: E402

TASKS = ["cpt_test_mc", "cpt_test_rolling", "cpt_test_gen"]

BUILTIN = ["next_line_downstream", "next_line_upstream"]


def _accuracy(ckpt: Path, tokenizer: Path, tasks: Path) -> float:
    initial = initial_model(f"ckpt:{ckpt}", None)
    model = build_model(initial.config)
    load_into(model, initial)
    results = simple_evaluate(
        model=HarnessLM(model.eval(), Tokenizer.from_file(str(tokenizer))),
        tasks=["cpt_test_mc"],
        task_manager=task_manager(str(tasks)),
        log_samples=False,
    )
    return results["results"]["cpt_test_mc"]["acc_norm,none"]


def test_task_curves_in_the_loop_and_their_gap(trained, tmp_path, data_dir):
    """Continued from the trained checkpoint: the in-loop value at step 0 is the checkpoint's own
    accuracy, the last one the final checkpoint's; the curve's gap metrics are in the summary."""
    out = tmp_path / "cpt"
    cfg = compose_train(
        [
            "logger=csv",
            f"data.dir={data_dir}",
            *SMALL_DATA,
            f"init=ckpt:{trained['ckpt']}",
            "model=from_init",
            "trainer.max_steps=4",
            "trainer.val_check_interval=2",
            "trainer.enable_progress_bar=false",
            "callbacks=[default,task_eval]",
            "callbacks.task_eval.tasks=[cpt_test_mc]",
            f"callbacks.task_eval.include_path={trained['tasks']}",
            "callbacks.task_eval.dense=[[2,1]]",
            "callbacks.task_eval.every=2",
            f"output_dir={out}",
        ]
    )
    summary = run(cfg)
    tokenizer = trained["hf"] / "tokenizer.json"
    assert summary["initial_tasks"]["cpt_test_mc/acc_norm"] == pytest.approx(
        _accuracy(trained["ckpt"], tokenizer, trained["tasks"])
    )
    assert summary["final_tasks"]["cpt_test_mc/acc_norm"] == pytest.approx(
        _accuracy(out / "checkpoints" / "last.ckpt", tokenizer, trained["tasks"])
    )
    gap = summary["task_gap"]["cpt_test_mc/acc"]
    assert {"peak", "recovery_step", "gap_area", "forgetting"} <= gap.keys()
    logged = [line.split(",") for line in (out / "metrics.csv").read_text().splitlines()]
    header = logged[0]
    column, step = header.index("task/cpt_test_mc/acc"), header.index("step")
    steps = sorted({int(row[step]) for row in logged[1:] if row[column]})
    assert steps == [0, 1, 2, 4]  # dense to 2, every 2; the validation at 2 is not repeated


def test_task_eval_refuses_unknown_tasks_before_training(tiny_run, trained):
    from cpt.config import ConfigError

    cfg = tiny_run(
        "callbacks=[default,task_eval]",
        "callbacks.task_eval.tasks=[no_such_task]",
        f"callbacks.task_eval.include_path={trained['tasks']}",
    )
    with pytest.raises(ConfigError, match=r"^callbacks.task_eval.tasks: unknown task 'no_such"):
        run(cfg)
    assert not Path(cfg.output_dir).exists()


@pytest.mark.slow
@pytest.mark.distributed
def test_task_eval_split_across_fsdp_ranks_equals_one_process(trained, tmp_path, data_dir):
    """Two FSDP processes score half the requests each (and make the same number of forward
    passes); the gathered accuracies equal those of one process."""
    from tests.helpers import train

    common = (
        f"init=ckpt:{trained['ckpt']}",
        "model=from_init",
        "trainer.max_steps=2",
        "trainer.precision=32-true",
        "data.global_batch_size=8",
        "callbacks=[default,task_eval]",
        "callbacks.task_eval.tasks=[cpt_test_mc,cpt_test_rolling]",
        f"callbacks.task_eval.include_path={trained['tasks']}",
    )
    fsdp = ("trainer=fsdp", "trainer.accelerator=cpu", "trainer.devices=2")
    summaries = [
        train(tmp_path / name, data_dir, *common, *extra)
        for name, extra in (("one", ()), ("two", fsdp))
    ]
    one, two = summaries
    assert two["geometry"]["world_size"] == 2 and "fsdp" in two
    for key in ("initial_tasks", "final_tasks"):
        assert one[key].keys() == two[key].keys() and one[key]
        for metric, value in one[key].items():
            assert two[key][metric] == pytest.approx(value, rel=1e-4), (key, metric)


def test_task_curves_travel_in_checkpoints():
    from cpt.callbacks import TaskEval

    first = TaskEval(tasks=["cpt_test_mc"])
    first.curves = {"cpt_test_mc/acc": [(0, 0.25, 0.1), (5, 0.5, 0.1)]}
    first.higher = {"cpt_test_mc/acc": True}
    resumed = TaskEval(tasks=["cpt_test_mc"])
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))  # as a checkpoint holds it
    assert resumed.curves == first.curves and resumed.higher == first.higher
    assert resumed._last_step() == 5  # the step already measured is not measured again


def test_task_eval_refuses_a_built_in_task_of_no_domain(tiny_run):
    from cpt.config import ConfigError

    cfg = tiny_run("callbacks=[default,task_eval]", "callbacks.task_eval.tasks=[next_line_nope]")
    with pytest.raises(ConfigError, match=r"^callbacks.task_eval.tasks: 'next_line_nope' is a "):
        run(cfg)
    assert not Path(cfg.output_dir).exists()
