"""Built-in lm-eval tasks that need no download: the next line of a held-out document among four.

For every domain of a run, `next_line_<domain>` is made from that domain's *held-out* documents
(the validation split; never a training window): the context is up to six lines of a document,
the answer its true next line, and the three distractors are lines of similar length (within 15
characters where the pool allows) from other held-out documents: one of the same domain and two of
the run's other domains (three of the same domain when the run has one domain). A model that knows
a domain's text prefers its true continuation; one that has drifted away from it prefers the other
domains' lines. lm-eval scores it (`acc`, and `acc_norm`: the log-likelihood per character, which
is what counts here, since the choices differ in length). Chance is 0.25; docs/evaluation.md has
what the demo's models score.

The items are a function of the held-out text and `SEED` alone, written once per set of prepared
datasets under `<data.dir>/tasks/<fingerprint>/` as JSON lines plus one task YAML each.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cpt.data.shards import PreparedDomain
from cpt.data.tokenizer import eod_id
from cpt.files import write_text_atomic

VERSION = 1
SEED = 0
CONTEXT_LINES = 6
MIN_CHARS = 12  # shorter lines (blank, `else:`, `)`) are too easy to tell apart or to confuse
NEAR_CHARS = 15
ITEMS = 1000  # per task; an in-loop evaluation takes the first `limit`
PREFIX = "next_line_"


def task_name(domain: str) -> str:
    return f"{PREFIX}{domain}"


def domain_of(task: str) -> str | None:
    return task.removeprefix(PREFIX) if task.startswith(PREFIX) else None


def held_out_texts(prepared: PreparedDomain, tokenizer: Any) -> list[str]:
    """The validation documents of a prepared domain, decoded (the tokenizer is byte-level)."""
    tokens, starts = prepared.tokens("val"), prepared.offsets("val")
    eod = eod_id(tokenizer)
    bounds = [*starts.tolist(), len(tokens)]
    texts = []
    for start, stop in zip(bounds[:-1], bounds[1:]):
        ids = tokens.read(start, stop)
        text = tokenizer.decode(ids[ids != eod].tolist())
        if text.strip():
            texts.append(text)
    return texts


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if len(line.strip()) >= MIN_CHARS]


def _near(pool: list[str], length: int, rng: random.Random, k: int, exclude: str) -> list[str]:
    """k lines of `pool` (distinct lines) close in length to `length` (the nearest 50 when few are
    within 15 characters); fewer when the pool has fewer."""
    distinct = [line for line in pool if line != exclude]
    close = [line for line in distinct if abs(len(line) - length) <= NEAR_CHARS]
    if len(close) < 50:
        close = sorted(distinct, key=lambda x: abs(len(x) - length))[:50]
    return rng.sample(close, min(k, len(close)))


def make_items(
    documents: list[str], others: list[str], size: int = ITEMS, seed: int = SEED
) -> list[dict[str, Any]]:
    """Multiple-choice items from `documents`, with distractors from `others` (another domain)."""
    rng = random.Random(seed)
    positions = []
    for d, text in enumerate(documents):
        lines = text.splitlines()
        positions += [(d, j) for j in range(1, len(lines)) if len(lines[j].strip()) >= MIN_CHARS]
    rng.shuffle(positions)
    contrast = list(dict.fromkeys(line for text in others for line in _lines(text)))
    own = [_lines(text) for text in documents]
    other_documents: dict[int, list[str]] = {}  # per document: the other documents' distinct lines
    items = []
    for d, j in positions[:size]:
        lines = documents[d].splitlines()
        answer = lines[j]
        if d not in other_documents:
            other_documents[d] = list(
                dict.fromkeys(line for e, pool in enumerate(own) if e != d for line in pool)
            )
        same = other_documents[d] or list(
            dict.fromkeys(line for line in own[d] if line not in lines[max(0, j - 20) : j + 20])
        )
        if contrast:
            distractors = _near(same, len(answer), rng, 1, answer)
            distractors += _near(contrast, len(answer), rng, 2, answer)
        else:
            distractors = _near(same, len(answer), rng, 3, answer)
        if len(set(distractors + [answer])) < 4:
            continue
        choices = [answer, *distractors]
        rng.shuffle(choices)
        items.append(
            {
                "context": "\n".join(lines[max(0, j - CONTEXT_LINES) : j]) + "\n",
                "choices": choices,
                "answer": choices.index(answer),
                "document": d,
                "line": j,
            }
        )
    return items


def fingerprint(prepared: Mapping[str, PreparedDomain]) -> str:
    key = json.dumps([VERSION, SEED, ITEMS, sorted((n, p.name) for n, p in prepared.items())])
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def write_tasks(root: Path, prepared: Mapping[str, PreparedDomain], tokenizer: Any) -> Path:
    """The folder of `next_line_<domain>` tasks for these prepared datasets (written once).

    Every rank may call it: the files are deterministic and each is renamed into place whole.
    """
    folder = Path(root).expanduser().resolve() / "tasks" / fingerprint(prepared)
    if _current(folder, prepared):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    texts = {name: held_out_texts(p, tokenizer) for name, p in prepared.items()}
    for name in prepared:
        others = [t for other, ts in texts.items() if other != name for t in ts]
        items = make_items(texts[name], others)
        data = folder / f"{task_name(name)}.jsonl"
        write_text_atomic(data, "".join(json.dumps(item) + "\n" for item in items))
        write_text_atomic(folder / f"{task_name(name)}.yaml", _yaml(task_name(name), data))
    return folder


def _current(folder: Path, prepared: Mapping[str, PreparedDomain]) -> bool:
    """Every YAML is what `_yaml` writes now: they name their data by absolute path (a moved data
    folder gets them rewritten), and an older version's YAML is replaced."""
    for name in prepared:
        path = folder / f"{task_name(name)}.yaml"
        data = folder / f"{task_name(name)}.jsonl"
        if not (path.is_file() and data.is_file()):
            return False
        if path.read_text() != _yaml(task_name(name), data):
            return False
    return True


def _yaml(task: str, data: Path) -> str:
    return (
        f"# generated by cpt/tasks/next_line.py (version {VERSION}); the items are in {data.name}\n"
        f"task: {task}\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {json.dumps(str(data))}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        # column names, not templates: lm-eval takes the field as it is instead of compiling
        # a Jinja template for every document at every evaluation (0.6 s of a twin's 3 s one)
        "doc_to_text: context\n"
        "doc_to_choice: choices\n"
        "doc_to_target: answer\n"
        'target_delimiter: ""\n'
        "metric_list:\n"
        "  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
        "  - metric: acc_norm\n    aggregation: mean\n    higher_is_better: true\n"
        f"metadata:\n  version: {VERSION}\n"
    )
