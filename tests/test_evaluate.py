"""lm-evaluation-harness on our model: item by item the same as lm-eval's own `hf` model on the
exported checkpoint, for multiple-choice, rolling log-likelihood and greedy generation tasks of a
user's task folder; `python -m cpt.evaluate` and its bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("lm_eval")

from lm_eval import simple_evaluate  # noqa: E402
from lm_eval.models.huggingface import HFLM  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

from cpt.evaluate import main, run_datasets  # noqa: E402
from cpt.tasks.index import task_manager  # noqa: E402
from cpt.tasks.next_line import (
    write_tasks,  # noqa: E402
)

TASKS = ["cpt_test_mc", "cpt_test_rolling", "cpt_test_gen"]

BUILTIN = ["next_line_downstream", "next_line_upstream"]


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


def test_evaluate_on_built_in_tasks_agrees_with_lm_evals_hf_model(trained, data_dir, tmp_path):
    """`python -m cpt.evaluate ckpt=... tasks=[next_line_...]` writes the tasks from the run's
    held-out data; lm-eval's own `hf` model on the exported checkpoint scores them the same."""
    out = tmp_path / "eval"
    main(
        [
            f"ckpt={trained['ckpt']}",
            f"tasks=[{','.join(BUILTIN)}]",
            f"data_dir={data_dir}",
            "limit=40",
            f"output={out}",
        ]
    )
    ours = json.loads((out / "results.json").read_text())["results"]
    # the session's data folder holds other tests' task folders too: this run's is its fingerprint's
    prepared = run_datasets({"ckpt": trained["ckpt"], "data_dir": data_dir})
    tokenizer = Tokenizer.from_file(str(trained["hf"] / "tokenizer.json"))
    folder = write_tasks(data_dir, prepared, tokenizer)
    theirs = simple_evaluate(
        model=HFLM(pretrained=str(trained["hf"]), device="cpu", batch_size=8),
        tasks=BUILTIN,
        task_manager=task_manager(None, folder),
        limit=40,
    )["results"]
    for task in BUILTIN:
        assert ours[task]["sample_len"] == 40
        for metric in ("acc,none", "acc_norm,none"):
            assert ours[task][metric] == pytest.approx(theirs[task][metric]), (task, metric)


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["hf={hf}"], "error: tasks: 'next_line_upstream' is a built-in task made from a cpt run"),
        (["ckpt={ckpt}", "data_dir={empty}"], "error: data_dir: {empty}/"),
        (["ckpt={ckpt}", "tasks=[next_line_nope]"], "error: tasks: 'next_line_nope' is a built-in"),
    ],
)
def test_bad_built_in_task_input_is_one_line(trained, tmp_path, capsys, data_dir, args, line):
    empty = tmp_path / "empty"
    empty.mkdir()
    values = {"hf": trained["hf"], "ckpt": trained["ckpt"], "empty": empty}
    args = [a.format(**values) for a in args]
    if not any(a.startswith("tasks=") for a in args):
        args.append("tasks=[next_line_upstream]")
    if not any(a.startswith("data_dir=") for a in args):
        args.append(f"data_dir={data_dir}")
    with pytest.raises(SystemExit) as exit_:
        main([*args, f"output={tmp_path / 'out'}"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(line.format(**values)) and "\n" not in err
    assert not (tmp_path / "out").exists()
