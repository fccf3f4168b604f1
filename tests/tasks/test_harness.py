"""lm-evaluation-harness on our model: item by item the same as lm-eval's own `hf` model on the
exported checkpoint, for multiple-choice, rolling log-likelihood and greedy generation tasks of a
user's task folder; `python -m cpt.evaluate` and its bad input."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("lm_eval")

from lm_eval import simple_evaluate  # noqa: E402
from lm_eval.models.huggingface import HFLM  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

from cpt.evaluate import run_datasets  # noqa: E402
from cpt.models.registry import build_model  # noqa: E402
from cpt.run.initial import initial_model, load_into  # noqa: E402
from cpt.tasks.harness import HarnessLM  # noqa: E402
from cpt.tasks.index import task_manager  # noqa: E402
from cpt.tasks.next_line import write_tasks  # noqa: E402

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
