"""The speed and memory options change nothing but speed and memory: chunked loss, attention
backends, activation checkpointing, torch.compile (and its fallback)."""

from __future__ import annotations

import logging

import pytest
import torch

from cpt.models.presets import config_from_name
from cpt.models.registry import build_model
from cpt.train import run


def _model_grads(model, ids, **options) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    for key, value in options.items():
        setattr(model, key, value)
    loss, _ = model(ids[:, :-1], targets=ids[:, 1:])
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_activation_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = build_model(config_from_name("tiny"))
    ids = torch.randint(0, 4096, (2, 65))
    loss, grads = _model_grads(model, ids, activation_checkpointing=False)
    loss_ckpt, grads_ckpt = _model_grads(model, ids, activation_checkpointing=True)
    assert loss_ckpt == pytest.approx(loss, abs=1e-6)
    for name, grad in grads.items():
        torch.testing.assert_close(grads_ckpt[name], grad, atol=1e-6, rtol=1e-5)


def test_compiled_blocks_match_eager():
    torch.manual_seed(0)
    model = build_model(config_from_name("tiny-llama"))
    ids = torch.randint(0, model.config.vocab_size, (2, 33))
    loss, grads = _model_grads(model, ids)
    assert model.compile_blocks(ids[:, :-1])
    compiled_loss, compiled_grads = _model_grads(model, ids)
    assert compiled_loss == pytest.approx(loss, abs=1e-5)
    for name, grad in grads.items():
        torch.testing.assert_close(compiled_grads[name], grad, atol=1e-5, rtol=1e-4)


def test_compile_failure_falls_back_to_eager_with_one_message(tiny_run, caplog, monkeypatch):
    """Inductor fails at the first call on some set-ups (pure-bf16 weights on a CPU with this
    torch); here every compiled block fails so, and training must go on uncompiled."""

    def compile_that_fails(module, *args, **kwargs):
        def fail(*a, **k):
            raise RuntimeError("InductorError: could not build a kernel")

        module._compiled_call_impl = fail

    monkeypatch.setattr(torch.nn.Module, "compile", compile_that_fails)
    cfg = tiny_run("model.compile=true", "trainer.max_steps=3")
    with caplog.at_level(logging.WARNING, logger="cpt.models.base"):
        summary = run(cfg)
    assert summary["steps"] == 3
    assert all(torch.isfinite(torch.tensor(v)) for v in summary["final_val_loss"].values())
    messages = [r.getMessage() for r in caplog.records if r.name == "cpt.models.base"]
    assert messages == [
        "model.compile: torch.compile failed (RuntimeError: InductorError: could not build a "
        "kernel); training continues without it"
    ]
