"""Built-in lm-eval tasks that need no download: the next line of a held-out document among four.

For every domain of a run, two tasks are made from that domain's *held-out* documents (the
validation split; never a training window). In both the context is up to six lines of a document
and the answer its true next line; the three distractors are lines of similar length (within 15
characters where the pool allows):
- `next_line_<domain>`: from the *same domain's* other held-out documents (from far in the same
  document when it is the only one). Only knowing how such text goes picks the answer: the measure
  of a domain's ability, which a continued model can lose and regain (Guo et al.'s gap);
- `domain_match_<domain>` (runs with more than one domain): from the *other* domains' held-out
  documents. A model picks the line that looks like the context's domain: domain recognition,
  which a continued model's new domain prior shifts (below chance on the old domain) without
  saying what it can still do there.
lm-eval scores both (`acc`, and `acc_norm`: the log-likelihood per character, which is what counts
here, since the choices differ in length). Chance is 0.25; docs/evaluation.md has what the demo's
models score.

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

VERSION = 2  # 2: next_line_ distractors from the same domain; domain_match_ apart
SEED = 0
CONTEXT_LINES = 6
MIN_CHARS = 12  # shorter lines (blank, `else:`, `)`) are too easy to tell apart or to confuse
NEAR_CHARS = 15
ITEMS = 1000  # per task; an in-loop evaluation takes the first `limit`
PREFIX, DOMAIN_PREFIX = "next_line_", "domain_match_"


def task_name(domain: str, prefix: str = PREFIX) -> str:
    return f"{prefix}{domain}"


def domain_of(task: str) -> str | None:
    """The domain a built-in task is made from (None: not a built-in task)."""
    for prefix in (PREFIX, DOMAIN_PREFIX):
        if task.startswith(prefix):
            return task.removeprefix(prefix)
    return None


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
    documents: list[str], others: list[str] | None = None, size: int = ITEMS, seed: int = SEED
) -> list[dict[str, Any]]:
    """Multiple-choice items from `documents`: distractors from `others` (other domains' held-out
    documents: domain recognition) when given, else from the same domain's other documents."""
    rng = random.Random(seed)
    positions = []
    for d, text in enumerate(documents):
        lines = text.splitlines()
        positions += [(d, j) for j in range(1, len(lines)) if len(lines[j].strip()) >= MIN_CHARS]
    rng.shuffle(positions)
    contrast = list(dict.fromkeys(line for text in others or [] for line in _lines(text)))
    own = [_lines(text) for text in documents]
    other_documents: dict[int, list[str]] = {}  # per document: the other documents' distinct lines

    def same_domain(d: int, j: int, lines: list[str]) -> list[str]:
        """The other held-out documents' lines; the only document's far lines when alone."""
        if d not in other_documents:
            other_documents[d] = list(
                dict.fromkeys(line for e, pool in enumerate(own) if e != d for line in pool)
            )
        return other_documents[d] or list(
            dict.fromkeys(line for line in own[d] if line not in lines[max(0, j - 20) : j + 20])
        )

    items = []
    for d, j in positions[:size]:
        lines = documents[d].splitlines()
        answer = lines[j]
        pool = contrast if others else same_domain(d, j, lines)  # only the pool the task draws
        distractors = _near(pool, len(answer), rng, 3, answer)
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
    """The folder of the built-in tasks (`next_line_<domain>`, and `domain_match_<domain>` with
    more than one domain) for these prepared datasets (written once).

    Every rank may call it: the files are deterministic and each is renamed into place whole.
    """
    folder = Path(root).expanduser().resolve() / "tasks" / fingerprint(prepared)
    if _current(folder, prepared):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    texts = {name: held_out_texts(p, tokenizer) for name, p in prepared.items()}
    for name, task, others in _tasks(prepared):
        items = make_items(texts[name], [t for o in others for t in texts[o]] or None)
        data = folder / f"{task}.jsonl"
        write_text_atomic(data, "".join(json.dumps(item) + "\n" for item in items))
        write_text_atomic(folder / f"{task}.yaml", _yaml(task, data))
    return folder


def _tasks(prepared: Mapping[str, Any]) -> list[tuple[str, str, list[str]]]:
    """(domain, task name, the domains its distractors come from) of every built-in task."""
    tasks = [(name, task_name(name), []) for name in prepared]
    if len(prepared) > 1:
        tasks += [
            (name, task_name(name, DOMAIN_PREFIX), [o for o in prepared if o != name])
            for name in prepared
        ]
    return tasks


def _current(folder: Path, prepared: Mapping[str, PreparedDomain]) -> bool:
    """Every YAML is what `_yaml` writes now: they name their data by absolute path (a moved data
    folder gets them rewritten), and an older version's YAML is replaced."""
    for _, task, _ in _tasks(prepared):
        path, data = folder / f"{task}.yaml", folder / f"{task}.jsonl"
        if not (path.is_file() and data.is_file()):
            return False
        if path.read_text() != _yaml(task, data):
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
