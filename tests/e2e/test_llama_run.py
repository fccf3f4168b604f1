"""The Llama family against transformers (Llama, Qwen 2), presets, import/export, a CPT run."""

from __future__ import annotations

from pathlib import Path

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
