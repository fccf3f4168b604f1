"""lm-evaluation-harness on our model: item by item the same as lm-eval's own `hf` model on the
exported checkpoint, for multiple-choice, rolling log-likelihood and greedy generation tasks of a
user's task folder; `python -m cpt.evaluate` and its bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("lm_eval")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from lm_eval import simple_evaluate  # noqa: E402
from lm_eval.models.huggingface import HFLM  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

from cpt.checkpoints import initial_model, load_into  # noqa: E402
from cpt.evaluate import main, run_datasets, task_manager  # noqa: E402
from cpt.export import export  # noqa: E402
from cpt.models.registry import build_model  # noqa: E402
from cpt.tasks.harness import HarnessLM  # noqa: E402
from cpt.tasks.next_line import CONTEXT_LINES, held_out_texts, make_items, write_tasks  # noqa: E402
from cpt.train import run  # noqa: E402
from tests.conftest import SMALL_DATA, compose_train  # noqa: E402

CHOICES = [
    ("def add(a, b):\n    return", [" a + b", " a - b", " print(a)", " None"]),
    ("The capital of France is", [" Paris", " Rome", " Berlin", " Madrid"]),
    ("import os\nimport", [" sys", " the", " 42", " ("]),
    ("for i in range(10):\n   ", [" print(i)", " return", " class", " )"]),
    ("class Point:\n    def __init__(self", [", x, y):", "):", " = 3", " import"]),
    ("The module provides", [" functions", " of", " 1.5", " def"]),
    ("", [" def main():", " The", " 0", " :"]),  # an empty context: lm-eval's prefix token
    ("x = [1, 2, 3]\nprint(len(x", ["))", ")", " + 1", "]"]),
]
TEXTS = [
    "Return the number of items in a container.",
    "def f(x):\n    return x * 2\n",
    " ".join(f"word{i} and value {i * 7} are stored in the table;" for i in range(160)),  # > 512
]
PROMPTS = ["def add(a, b):\n", "The module", "import"]


def _write_tasks(folder: Path) -> Path:
    folder.mkdir(parents=True)
    data = folder / "data"
    data.mkdir()
    items = [{"context": c, "choices": ch, "answer": i % 4} for i, (c, ch) in enumerate(CHOICES)]
    rows = {
        "mc": items,
        "rolling": [{"text": t} for t in TEXTS],
        "gen": [{"context": p, "answer": "x"} for p in PROMPTS],
    }
    for name, lines in rows.items():
        (data / f"{name}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    specs = {  # task -> what follows its data files in the YAML
        "mc": "output_type: multiple_choice\n"
        'doc_to_text: "{{context}}"\ndoc_to_choice: "{{choices}}"\ndoc_to_target: "{{answer}}"\n'
        "metric_list:\n  - metric: acc\n  - metric: acc_norm\n",
        "rolling": "output_type: loglikelihood_rolling\n"
        'doc_to_text: ""\ndoc_to_target: "{{text}}"\n'
        "metric_list:\n  - metric: word_perplexity\n  - metric: bits_per_byte\n",
        "gen": "output_type: generate_until\n"
        'doc_to_text: "{{context}}"\ndoc_to_target: "{{answer}}"\n'
        'generation_kwargs:\n  until: ["\\n\\n"]\n  max_gen_toks: 12\n  do_sample: false\n'
        "metric_list:\n  - metric: exact_match\n",
    }
    for name, rest in specs.items():
        (folder / f"cpt_test_{name}.yaml").write_text(
            f"task: cpt_test_{name}\ndataset_path: json\n"
            f"dataset_kwargs:\n  data_files:\n    test: {data / name}.jsonl\ntest_split: test\n"
            + rest
        )
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir) -> dict[str, Path]:
    """A tiny model trained a few steps, its checkpoint, its HF export and a user task folder."""
    root = tmp_path_factory.mktemp("tasks")
    cfg = compose_train(
        [
            "logger=csv",
            f"data.dir={data_dir}",
            *SMALL_DATA,
            "trainer.max_steps=4",
            "trainer.enable_progress_bar=false",
            f"output_dir={root / 'run'}",
        ]
    )
    run(cfg)
    ckpt = root / "run" / "checkpoints" / "last.ckpt"
    return {"ckpt": ckpt, "hf": export(ckpt, root / "hf"), "tasks": _write_tasks(root / "tasks")}


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


# ---- the built-in next-line tasks ---------------------------------------------------------------
BUILTIN = ["next_line_downstream", "next_line_upstream"]


def _items(folder: Path, task: str) -> list[dict]:
    return [json.loads(line) for line in (folder / f"{task}.jsonl").read_text().splitlines()]


def _check_item(item: dict, documents: list[str]) -> None:
    lines = documents[item["document"]].splitlines()
    j = item["line"]
    assert item["choices"][item["answer"]] == lines[j]
    assert item["context"] == "\n".join(lines[max(0, j - CONTEXT_LINES) : j]) + "\n"
    assert len(set(item["choices"])) == 4


def test_built_in_tasks_come_from_the_held_out_documents(trained, data_dir, tmp_path):
    """Every item is a line of a validation document after its preceding lines; one distractor
    is a line of the domain's held-out documents, two are the other domain's."""
    prepared = run_datasets({"ckpt": trained["ckpt"], "data_dir": data_dir})
    assert sorted(prepared) == ["downstream", "upstream"]
    tokenizer = Tokenizer.from_file(str(trained["hf"] / "tokenizer.json"))
    folder = write_tasks(tmp_path / "a", prepared, tokenizer)
    texts = {name: held_out_texts(p, tokenizer) for name, p in prepared.items()}
    train = {
        name: tokenizer.decode(p.tokens("train").read(0, len(p.tokens("train"))).tolist())
        for name, p in prepared.items()
    }
    for name, documents in texts.items():
        other = "upstream" if name == "downstream" else "downstream"
        assert not any(doc.strip() in train[name] for doc in documents)  # held out, not trained on
        items = _items(folder, f"next_line_{name}")
        assert len(items) > 50
        for item in items:
            _check_item(item, documents)
            distractors = [c for k, c in enumerate(item["choices"]) if k != item["answer"]]
            own = {line for doc in documents for line in doc.splitlines()}
            theirs = {line for doc in texts[other] for line in doc.splitlines()}
            assert sum(c in own for c in distractors) >= 1
            assert sum(c in theirs for c in distractors) >= 2
        answers = [item["answer"] for item in items]
        assert 0.15 < answers.count(0) / len(answers) < 0.35  # the answer's position is shuffled
    again = write_tasks(tmp_path / "b", prepared, tokenizer)  # deterministic: the same bytes
    for task in BUILTIN:
        assert (again / f"{task}.jsonl").read_bytes() == (folder / f"{task}.jsonl").read_bytes()
    assert again.name == folder.name
    assert write_tasks(tmp_path / "c", {"upstream": prepared["upstream"]}, tokenizer).name != (
        folder.name
    )


@settings(max_examples=40, deadline=None)
@given(
    documents=st.lists(
        st.lists(st.text("abc xyz_()=:", min_size=0, max_size=30), min_size=1, max_size=30),
        min_size=1,
        max_size=5,
    ),
    others=st.lists(st.text("ABC XYZ.,", min_size=12, max_size=40), max_size=40),
)
def test_next_line_items_hold_for_any_documents(documents, others):
    texts = ["\n".join(lines) for lines in documents]
    items = make_items(texts, others, size=50)
    for item in items:
        _check_item(item, texts)
        assert len(item["choices"][item["answer"]].strip()) >= 12
    assert make_items(texts, others, size=50) == items


def test_a_moved_task_folder_gets_its_yamls_rewritten(trained, data_dir, tmp_path):
    prepared = run_datasets({"ckpt": trained["ckpt"], "data_dir": data_dir})
    tokenizer = Tokenizer.from_file(str(trained["hf"] / "tokenizer.json"))
    folder = write_tasks(tmp_path / "old", prepared, tokenizer)
    moved = tmp_path / "new" / "tasks" / folder.name
    moved.parent.mkdir(parents=True)
    folder.rename(moved)
    assert write_tasks(tmp_path / "new", prepared, tokenizer) == moved
    assert str(moved) in (moved / "next_line_upstream.yaml").read_text()


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


def test_task_eval_refuses_a_built_in_task_of_no_domain(tiny_run):
    from cpt.config import ConfigError

    cfg = tiny_run("callbacks=[default,task_eval]", "callbacks.task_eval.tasks=[next_line_nope]")
    with pytest.raises(ConfigError, match=r"^callbacks.task_eval.tasks: 'next_line_nope' is a "):
        run(cfg)
    assert not Path(cfg.output_dir).exists()


def test_built_in_tasks_alone_do_not_index_lm_evals_own():
    """A run asking only for next-line tasks skips indexing lm-eval's ~15k task files (seconds
    per process, in every job of a sweep); other task names keep them (the tests above)."""
    from cpt.evaluate import task_manager

    manager = task_manager(None, tasks=["next_line_downstream", "next_line_upstream"])
    assert "piqa" not in manager.all_tasks and "arc_easy" not in manager.all_tasks
