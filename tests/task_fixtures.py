"""What the lm-eval tests share: a tiny model trained a few steps (its checkpoint and HF export)
and a user's task folder of multiple-choice, rolling log-likelihood and greedy generation tasks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cpt.export import export
from cpt.train import run
from tests.conftest import SMALL_DATA, compose_train

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


@pytest.fixture(scope="session")
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
