"""The Llama family against transformers (Llama, Qwen 2), presets, import/export, a CPT run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers

from cpt.models import config_from_name
from cpt.train import run
from tests.helpers import random_llama


def test_few_step_cpt_run_of_a_tiny_llama(tiny_run, tmp_path):
    summary = run(tiny_run("model=tiny-llama", "trainer.max_steps=3", out="scratch"))
    assert (
        summary["steps"] == 3
        and summary["parameters"] == config_from_name("tiny-llama").num_parameters()
    )
    assert all(torch.isfinite(torch.tensor(v)) for v in summary["final_val_loss"].values())
    hf = random_llama("llama", seed=5)
    hf.config.vocab_size = 640
    hf.resize_token_embeddings(640)
    hf.save_pretrained(tmp_path / "hf_llama")
    cpt = tiny_run(
        f"init=hf:{tmp_path / 'hf_llama'}", "model=from_init", "data.train=downstream", out="cpt"
    )
    continued = run(cpt)
    assert continued["steps"] == 3
    from cpt.export import export

    exported = export(Path(cpt.output_dir) / "checkpoints" / "last.ckpt", tmp_path / "exported")
    assert transformers.LlamaForCausalLM.from_pretrained(exported).config.num_key_value_heads == 2


def test_a_start_token_tokenizer_trains_exports_and_evaluates_as_transformers_does(
    tiny_run, tmp_path
):
    """A Llama-3-style tokenizer (built offline): every prepared document begins with its start
    token; the export loads with `AutoTokenizer` (bos/eos/pad set, the start token added) and
    `generation_config.json`; lm-eval's own `hf` model on it scores as our in-loop model."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    from cpt.data.sources import SourceSpec, documents
    from cpt.data.tokenizer import load_tokenizer
    from cpt.evaluate import run_datasets
    from cpt.export import export
    from cpt.models.registry import build_model
    from cpt.run.initial import initial_model, load_into
    from cpt.tasks.harness import HarnessLM
    from cpt.tasks.index import task_manager
    from tests.helpers import llama_style_tokenizer
    from tests.task_fixtures import _write_tasks

    texts = list(documents(SourceSpec("python-docs"), max_docs=60))
    path = llama_style_tokenizer(tmp_path / "tok", texts, "llama3")
    cfg = tiny_run("model=tiny-llama", f"data.tokenizer={path}", "trainer.max_steps=3")
    run(cfg)
    ckpt = Path(cfg.output_dir) / "checkpoints" / "last.ckpt"
    prepared = run_datasets({"ckpt": ckpt, "data_dir": cfg.data.dir})
    assert len(prepared) == 2
    for domain in prepared.values():
        for split in ("train", "val"):
            tokens, starts = domain.tokens(split), domain.offsets(split)
            assert len(starts) and all(tokens.read(s, s + 1)[0] == 0 for s in starts.tolist())
    exported = export(ckpt, tmp_path / "exported")
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(exported)
    assert (hf_tokenizer.bos_token, hf_tokenizer.eos_token, hf_tokenizer.pad_token) == (
        "<|begin_of_text|>",
        "<|end_of_text|>",
        "<|end_of_text|>",
    )
    ours = load_tokenizer(str(path))
    assert hf_tokenizer("def f():")["input_ids"] == ours.encode("def f():").ids
    generation = transformers.GenerationConfig.from_pretrained(exported)
    assert (generation.bos_token_id, generation.eos_token_id, generation.pad_token_id) == (0, 1, 1)
    assert transformers.AutoModelForCausalLM.from_pretrained(exported).config.model_type == "llama"
    initial = initial_model(f"ckpt:{ckpt}", None)
    model = build_model(initial.config)
    load_into(model, initial)
    tasks = ["cpt_test_mc", "cpt_test_rolling", "cpt_test_gen"]
    manager = task_manager(str(_write_tasks(tmp_path / "tasks")))
    results = [
        simple_evaluate(model=lm, tasks=tasks, task_manager=manager, log_samples=True, limit=8)
        for lm in (
            HarnessLM(model.eval(), ours, batch_size=3),
            HFLM(pretrained=str(exported), device="cpu", batch_size=4),
        )
    ]
    for task in tasks:
        mine, theirs = (r["samples"][task] for r in results)
        assert len(mine) == len(theirs) > 0
        for a, b in zip(mine, theirs):
            assert a["arguments"] == b["arguments"]
            if task == "cpt_test_gen":
                assert a["resps"] == b["resps"]
                continue
            for (ra,), (rb,) in zip(a["resps"], b["resps"]):
                score_a = ra[0] if isinstance(ra, (tuple, list)) else ra
                score_b = rb[0] if isinstance(rb, (tuple, list)) else rb
                assert score_a == pytest.approx(score_b, abs=1e-3, rel=1e-5)
