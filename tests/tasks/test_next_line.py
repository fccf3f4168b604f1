"""The built-in next-line tasks (`cpt/tasks/next_line.py`): items from the run's held-out
documents, scored by lm-eval's own `hf` model as by ours; `python -m cpt.evaluate` on them and its
bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("lm_eval")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

from cpt.evaluate import run_datasets  # noqa: E402
from cpt.tasks.index import task_manager  # noqa: E402
from cpt.tasks.next_line import CONTEXT_LINES, held_out_texts, make_items, write_tasks  # noqa: E402

BUILTIN = ["next_line_downstream", "next_line_upstream"]
DOMAIN_MATCH = ["domain_match_downstream", "domain_match_upstream"]


def _items(folder: Path, task: str) -> list[dict]:
    return [json.loads(line) for line in (folder / f"{task}.jsonl").read_text().splitlines()]


def _check_item(item: dict, documents: list[str]) -> None:
    lines = documents[item["document"]].splitlines()
    j = item["line"]
    assert item["choices"][item["answer"]] == lines[j]
    assert item["context"] == "\n".join(lines[max(0, j - CONTEXT_LINES) : j]) + "\n"
    assert len(set(item["choices"])) == 4


def test_built_in_tasks_come_from_the_held_out_documents(trained, data_dir, tmp_path):
    """Every item is a line of a validation document after its preceding lines; next_line_'s
    distractors are lines of the same domain's other held-out documents, domain_match_'s of the
    other domain's."""
    prepared = run_datasets({"ckpt": trained["ckpt"], "data_dir": data_dir})
    assert sorted(prepared) == ["downstream", "upstream"]
    tokenizer = Tokenizer.from_file(str(trained["hf"] / "tokenizer.json"))
    folder = write_tasks(tmp_path / "a", prepared, tokenizer)
    assert sorted(p.stem for p in folder.glob("*.yaml")) == sorted(BUILTIN + DOMAIN_MATCH)
    texts = {name: held_out_texts(p, tokenizer) for name, p in prepared.items()}
    train = {
        name: tokenizer.decode(p.tokens("train").read(0, len(p.tokens("train"))).tolist())
        for name, p in prepared.items()
    }
    for name, documents in texts.items():
        other = "upstream" if name == "downstream" else "downstream"
        assert not any(doc.strip() in train[name] for doc in documents)  # held out, not trained on
        theirs = {line for doc in texts[other] for line in doc.splitlines()}
        for task, domain_match in ((f"next_line_{name}", False), (f"domain_match_{name}", True)):
            items = _items(folder, task)
            assert len(items) > 50
            for item in items:
                _check_item(item, documents)
                distractors = [c for k, c in enumerate(item["choices"]) if k != item["answer"]]
                others = [
                    line
                    for e, doc in enumerate(documents)
                    if e != item["document"]
                    for line in doc.splitlines()
                ]
                if len(documents) == 1:  # the only held-out document: its far lines
                    lines, j = documents[0].splitlines(), item["line"]
                    others = lines[: max(0, j - 20)] + lines[j + 20 :]
                pool = theirs if domain_match else set(others)
                assert all(c in pool for c in distractors), (task, distractors)
            answers = [item["answer"] for item in items]
            assert 0.15 < answers.count(0) / len(answers) < 0.35  # the answer's place is shuffled
    again = write_tasks(tmp_path / "b", prepared, tokenizer)  # deterministic: the same bytes
    for task in BUILTIN + DOMAIN_MATCH:
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


def test_lm_eval_takes_the_items_verbatim_and_an_older_yaml_is_rewritten(
    trained, data_dir, tmp_path
):
    """The YAMLs name the items' columns (no Jinja template compiled per document): every request
    lm-eval builds is an item's context and one of its choices as written; a YAML of an older
    version (templates) is replaced."""
    from lm_eval.tasks import get_task_dict

    prepared = run_datasets({"ckpt": trained["ckpt"], "data_dir": data_dir})
    tokenizer = Tokenizer.from_file(str(trained["hf"] / "tokenizer.json"))
    folder = write_tasks(tmp_path / "a", prepared, tokenizer)
    yaml = folder / "next_line_upstream.yaml"
    current = yaml.read_text()
    assert "doc_to_text: context\n" in current and "{{" not in current
    yaml.write_text(current.replace("doc_to_text: context", 'doc_to_text: "{{context}}"'))
    assert write_tasks(tmp_path / "a", prepared, tokenizer) == folder
    assert yaml.read_text() == current
    manager = task_manager(None, folder, tasks=["next_line_upstream"])
    task = get_task_dict(["next_line_upstream"], manager)["next_line_upstream"]
    task.build_all_requests(limit=30)
    items = _items(folder, "next_line_upstream")
    assert len(task.instances) == sum(len(items[i]["choices"]) for i in range(30))
    for instance in task.instances:
        item = items[instance.doc_id]
        assert instance.arguments == (item["context"], item["choices"][instance.idx])
