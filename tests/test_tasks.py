"""lm-evaluation-harness on our model: item by item the same as lm-eval's own `hf` model on the
exported checkpoint, for multiple-choice, rolling log-likelihood and greedy generation tasks of a
user's task folder; `python -m cpt.evaluate` and its bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("lm_eval")

from lm_eval import simple_evaluate  # noqa: E402
from lm_eval.models.huggingface import HFLM  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

from cpt.checkpoints import initial_model, load_into  # noqa: E402
from cpt.evaluate import main, run_datasets, task_manager  # noqa: E402
from cpt.models.registry import build_model  # noqa: E402
from cpt.tasks.harness import HarnessLM  # noqa: E402
from cpt.tasks.next_line import write_tasks  # noqa: E402
from cpt.train import run  # noqa: E402
from tests.conftest import SMALL_DATA, compose_train  # noqa: E402

TASKS = ["cpt_test_mc", "cpt_test_rolling", "cpt_test_gen"]


def test_our_model_scores_every_item_as_lm_evals_hf_model_does(trained, data_dir, tmp_path):
    """On a user's folder and on the built-in tasks of the run's data (30 items each)."""
    tokenizer = Tokenizer.from_file(str(trained["hf"] / "tokenizer.json"))
    prepared = run_datasets({"ckpt": trained["ckpt"], "data_dir": data_dir})
    manager = task_manager(str(trained["tasks"]), write_tasks(tmp_path, prepared, tokenizer))
    initial = initial_model(f"ckpt:{trained['ckpt']}", None)
    model = build_model(initial.config)
    load_into(model, initial)
    every = TASKS + ["next_line_downstream", "next_line_upstream"]
    ours = simple_evaluate(
        model=HarnessLM(model.eval(), tokenizer, batch_size=3),  # several batches, lengths mixed
        tasks=every,
        task_manager=manager,
        log_samples=True,
        limit=30,
    )
    theirs = simple_evaluate(
        model=HFLM(pretrained=str(trained["hf"]), device="cpu", batch_size=4),
        tasks=every,
        task_manager=manager,
        log_samples=True,
        limit=30,
    )
    for task in every:
        mine, reference = ours["samples"][task], theirs["samples"][task]
        assert len(mine) == len(reference) > 0
        for a, b in zip(mine, reference):
            assert a["doc_id"] == b["doc_id"]
            if task == "cpt_test_gen":
                assert a["resps"] == b["resps"]  # the same greedy text
                continue
            for (ra,), (rb,) in zip(a["resps"], b["resps"]):
                logprob_a = ra[0] if isinstance(ra, (tuple, list)) else ra
                logprob_b = rb[0] if isinstance(rb, (tuple, list)) else rb
                assert logprob_a == pytest.approx(logprob_b, abs=1e-3, rel=1e-5)
                if isinstance(ra, (tuple, list)):
                    assert ra[1] == rb[1]  # greedy or not
    for task in every:
        for metric, value in theirs["results"][task].items():
            if isinstance(value, float) and "stderr" not in metric:
                assert ours["results"][task][metric] == pytest.approx(value, rel=1e-4), metric


def test_evaluate_command_prints_the_table_and_writes_lm_evals_results(trained, tmp_path, capsys):
    out = tmp_path / "eval"
    main(
        [
            f"ckpt={trained['ckpt']}",
            "tasks=[cpt_test_mc]",
            f"include_path={trained['tasks']}",
            "limit=5",
            f"output={out}",
        ]
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == f"wrote {out}"
    assert any(line.startswith("|cpt_test_mc") and "acc" in line for line in lines)
    results = json.loads((out / "results.json").read_text())["results"]["cpt_test_mc"]
    assert 0.0 <= results["acc,none"] <= 1.0 and results["sample_len"] == 5


def _no_decoder(hf: Path, folder: Path) -> Path:
    spec = json.loads((hf / "tokenizer.json").read_text())
    spec["decoder"] = None
    path = folder / "tokenizer.json"
    path.write_text(json.dumps(spec))
    return path


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["tasks=[no_such_task]"], "error: tasks: unknown task 'no_such_task'; expected"),
        (["tasks=[cpt_test_mc]", "limit=0"], "error: limit: expected a count >= 1 or a fraction"),
        (["tasks=[cpt_test_mc]", "limit=1.5"], "error: limit: a fraction must be in (0, 1]"),
        (["tasks=[cpt_test_mc]", "include_path={empty}"], "error: include_path: {empty}: no task"),
        (["tasks=[cpt_test_mc]", "batchsize=4"], "error: batchsize: unknown option"),
        (["tasks=[cpt_test_gen]", "tokenizer={mute}"], "error: tasks: a generative task needs"),
        ([], "error: tasks: expected a list of lm-eval task names"),
    ],
)
def test_bad_evaluation_input_is_one_line(trained, tmp_path, capsys, args, line):
    empty = tmp_path / "empty"
    empty.mkdir()
    mute = _no_decoder(trained["hf"], tmp_path)
    args = [a.format(empty=empty, mute=mute) for a in args]
    if not any(a.startswith("include_path=") for a in args):
        args.append(f"include_path={trained['tasks']}")
    with pytest.raises(SystemExit) as exit_:
        main([f"ckpt={trained['ckpt']}", *args, f"output={tmp_path / 'out'}"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(line.format(empty=empty)) and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_batches_hold_at_most_the_logit_budget(trained):
    initial = initial_model(f"ckpt:{trained['ckpt']}", None)
    model = build_model(initial.config)
    tokenizer = Tokenizer.from_file(str(trained["hf"] / "tokenizer.json"))
    vocab = initial.config.vocab_size
    lm = HarnessLM(model, tokenizer, batch_size=64, logit_budget=40 * vocab)
    pairs = [([1] * n, [2, 3]) for n in (5, 30, 9, 12, 3, 18, 1)]
    batches = list(lm._batches(pairs, list(range(len(pairs)))))
    assert sorted(i for b in batches for i in b) == list(range(len(pairs)))
    for batch in batches:
        longest = max(lm._length(pairs[i]) for i in batch)
        assert len(batch) == 1 or len(batch) * longest * vocab <= lm.logit_budget
    with torch.no_grad():
        scored = lm._score(pairs)
    assert len(scored) == len(pairs) and all(s[0] < 0 for s in scored)


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
