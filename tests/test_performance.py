"""The speed and memory options change nothing but speed and memory: chunked loss, attention
backends, activation checkpointing, torch.compile (and its fallback)."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cpt.models.attention import Documents, _packed_sdpa, attend, packed_method
from cpt.models.blocked_attention import BLOCK, blocked_causal_attention
from cpt.models.loss import chunk_tokens, lm_loss
from cpt.models.presets import config_from_name
from cpt.models.recompute import activation_linear
from cpt.models.registry import build_model
from cpt.train import run


@pytest.mark.parametrize("chunk", [1, 7, 64, 150, 1000])
def test_chunked_loss_matches_the_plain_loss_and_its_gradients(chunk):
    torch.manual_seed(0)
    hidden = torch.randn(3, 50, 32, requires_grad=True)
    weight = torch.randn(1000, 32, requires_grad=True)
    targets = torch.randint(0, 1000, (3, 50))
    plain, plain_tokens = lm_loss(hidden, weight, targets, None)
    (3.0 * plain).backward()  # a scaled loss, as gradient accumulation or AMP scaling does
    expected = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    chunked, chunked_tokens = lm_loss(hidden, weight, targets, chunk)
    (3.0 * chunked).backward()
    assert chunked.item() == pytest.approx(plain.item(), abs=1e-6)
    assert chunked_tokens.shape == targets.shape and not chunked_tokens.requires_grad
    torch.testing.assert_close(chunked_tokens, plain_tokens, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(hidden.grad, expected[0], atol=1e-7, rtol=1e-5)
    torch.testing.assert_close(weight.grad, expected[1], atol=1e-7, rtol=1e-5)


def test_chunked_loss_without_gradients_computes_none():
    hidden, weight = torch.randn(40, 16, requires_grad=True), torch.randn(300, 16)
    targets = torch.randint(0, 300, (40,))
    with torch.no_grad():
        loss, tokens = lm_loss(hidden, weight, targets, 8)
    assert not loss.requires_grad
    assert tokens.mean().item() == pytest.approx(lm_loss(hidden, weight, targets, None)[0].item())
    assert chunk_tokens(50304) == 208  # a chunk of Pythia's vocabulary stays near 40 MiB


@pytest.mark.parametrize("family", ["tiny", "tiny-llama"])
def test_models_train_identically_with_the_chunked_loss(family):
    """Whole-model gradients, tied (Llama tiny) or untied (GPT-NeoX tiny) output embeddings."""
    torch.manual_seed(0)
    model = build_model(config_from_name(family))
    ids = torch.randint(0, model.config.vocab_size, (2, 33))
    grads = {}
    for loss_kind in ("plain", "chunked"):
        model.zero_grad(set_to_none=True)
        model.set_loss(loss_kind)
        model.loss_chunk = 5 if loss_kind == "chunked" else None  # many chunks of 64 tokens
        loss, _ = model(ids[:, :-1], targets=ids[:, 1:])
        loss.backward()
        grads[loss_kind] = {n: p.grad.clone() for n, p in model.named_parameters()}
    for name, grad in grads["plain"].items():
        torch.testing.assert_close(grads["chunked"][name], grad, atol=1e-6, rtol=1e-4)


def _qkv(batch: int = 2, heads: int = 4, seq: int = 48, dim: int = 16):
    torch.manual_seed(2)
    return (torch.randn(batch, heads, seq, dim) for _ in range(3))


SEGMENTS = torch.tensor([[0] * 5 + [1] * 30 + [2] * 13, [0] * 48])


@pytest.mark.parametrize("documents", [None, SEGMENTS], ids=["causal", "packed"])
def test_sdpa_matches_eager_forward_and_backward(documents):
    q, k, v = (x.requires_grad_(True) for x in _qkv())
    docs = None if documents is None else Documents(documents)
    outputs, grads = [], []
    for backend in ("eager", "sdpa"):
        out = attend(q, k, v, backend, docs)
        out.square().sum().backward()
        outputs.append(out.detach())
        grads.append([x.grad.clone() for x in (q, k, v)])
        for x in (q, k, v):
            x.grad = None
    torch.testing.assert_close(outputs[1], outputs[0], atol=1e-5, rtol=1e-4)
    for got, want in zip(grads[1], grads[0]):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


@settings(max_examples=12, deadline=None)
@given(
    seq=st.integers(1, 3 * BLOCK + 5),
    heads=st.integers(1, 3),
    head_dim=st.sampled_from([8, 16]),
    bf16=st.booleans(),
    through_sdpa=st.booleans(),
)
def test_blocked_attention_matches_eager_forward_and_backward(
    seq, heads, head_dim, bf16, through_sdpa
):
    """By blocks of queries (the blocks above the diagonal skipped, probabilities recomputed in
    backward; what `sdpa` runs on a CPU in bf16 from `BLOCK + 1` tokens on, PyTorch's kernel
    otherwise): the eager reference's values and gradients, in fp32 to rounding, in bf16 within
    bf16's."""
    torch.manual_seed(seq)
    dtype = torch.bfloat16 if bf16 else torch.float32
    # the model's layout: [batch, seq, heads, dim] in memory, [batch, heads, seq, dim] views
    q, k, v, grad = (torch.randn(2, seq, heads, head_dim).transpose(1, 2) for _ in range(4))
    results = []
    for backend, precision in (("eager", torch.float64), ("sdpa", dtype)):
        inputs = [x.to(precision).requires_grad_(True) for x in (q, k, v)]
        direct = backend == "sdpa" and not through_sdpa
        out = blocked_causal_attention(*inputs) if direct else attend(*inputs, backend)
        out.backward(grad.to(precision))
        results.append([out.detach(), *(x.grad for x in inputs)])
    tolerance = 0.02 if bf16 else 1e-5  # relative to each tensor's norm
    for got, want in zip(results[1], results[0]):
        assert (got.double() - want).norm() <= tolerance * want.norm() + 1e-6


@pytest.mark.parametrize(
    ("seq", "bf16", "blocked"),
    [(BLOCK + 1, True, True), (BLOCK, True, False), (BLOCK + 1, False, False)],
)
def test_sdpa_on_a_cpu_goes_by_blocks_in_bf16_past_one_block(seq, bf16, blocked):
    dtype = torch.bfloat16 if bf16 else torch.float32
    q, k, v = (torch.randn(1, 2, seq, 16, dtype=dtype) for _ in range(3))
    expected = (
        blocked_causal_attention(q, k, v)
        if blocked
        else torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    )
    assert torch.equal(attend(q, k, v, "sdpa"), expected)


def test_flex_attention_block_mask_matches_eager():
    """FlexAttention's document mask (used by sdpa on CUDA); forward only, as CPUs run it."""
    q, k, v = _qkv()
    docs = Documents(SEGMENTS)
    with torch.no_grad():
        want = attend(q, k, v, "eager", docs)
        torch.testing.assert_close(_packed_sdpa(q, k, v, docs, "mask"), want, atol=1e-5, rtol=0)
        flex = _packed_sdpa(q, k, v, docs, "flex")
    torch.testing.assert_close(flex, want, atol=1e-5, rtol=1e-4)
    assert packed_method(q) == "mask"  # what a CPU takes
    assert docs.cu_seqlens.tolist() == [0, 5, 35, 48, 96] and docs.max_len == 48


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


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["sdpa", "flash"])
def test_gpu_backends_match_eager_in_bf16(backend):
    """Flash kernels (flash-attn, PyTorch varlen, FlexAttention) against the fp32 reference."""
    from cpt.models.attention import flash_available

    if backend == "flash" and flash_available() is not None:
        pytest.skip(f"flash {flash_available()}")
    q, k, v = (x.cuda() for x in _qkv(seq=256, dim=64))
    segments = torch.tensor([[0] * 100 + [1] * 156, [0] * 256]).cuda()
    for docs in (None, Documents(segments)):
        want = attend(q, k, v, "eager", docs)
        got = attend(*(x.bfloat16() for x in (q, k, v)), backend, docs).float()
        torch.testing.assert_close(got, want, atol=2e-2, rtol=2e-2)
    bf = [x.bfloat16() for x in (q, k, v)]
    docs = Documents(segments)
    want = attend(q, k, v, "eager", docs)
    for method in ("varlen", "flex", "mask"):
        got = _packed_sdpa(*bf, docs, method).float()
        torch.testing.assert_close(got, want, atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("bias", [True, False])
def test_recomputed_activation_matches_the_plain_mlp(bias):
    torch.manual_seed(0)
    h = torch.randn(2, 9, 64, requires_grad=True)
    linear = torch.nn.Linear(64, 16, bias=bias)
    plain = linear(torch.nn.functional.gelu(h))
    plain.square().sum().backward()
    expected = [t.grad.clone() for t in (h, *linear.parameters())]
    for t in (h, *linear.parameters()):
        t.grad = None
    out = activation_linear(h, torch.nn.functional.gelu, linear.weight, linear.bias)
    out.square().sum().backward()
    torch.testing.assert_close(out, plain)
    for got, want in zip([t.grad for t in (h, *linear.parameters())], expected):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_chunked_loss_and_recompute_under_bf16_autocast_follow_autocast():
    """Under autocast the matmuls run in bf16, as F.linear would: close to the fp32 result."""
    torch.manual_seed(0)
    model = build_model(config_from_name("tiny"))
    ids = torch.randint(0, 4096, (2, 65))
    results = {}
    for kind in ("plain", "chunked"):
        model.zero_grad(set_to_none=True)
        model.set_loss(kind)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, _ = model(ids[:, :-1], targets=ids[:, 1:])
        loss.backward()
        results[kind] = loss.item(), model.embed_out.weight.grad.clone()
    assert results["chunked"][0] == pytest.approx(results["plain"][0], rel=1e-2)
    assert model.embed_out.weight.grad.dtype == torch.float32
    torch.testing.assert_close(results["chunked"][1], results["plain"][1], atol=1e-3, rtol=0.05)


@pytest.mark.parametrize("chunk", [16, 64, 256])
def test_bf16_weight_gradient_summed_over_chunks_is_as_close_as_autocasts_own(chunk):
    """On a CPU under bf16 the chunks' weight-gradient products are summed in a bf16 buffer: the
    result is within bf16 rounding of the exact gradient, as close as the plain path's (one bf16
    matmul under autocast), however many chunks it takes."""
    torch.manual_seed(0)
    tokens, vocab, d = 256, 4096, 128
    hidden, targets = torch.randn(tokens, d), torch.randint(0, vocab, (tokens,))
    weight = torch.randn(vocab, d) * 0.05
    h64, w64 = hidden.double().requires_grad_(), weight.double().requires_grad_()
    torch.nn.functional.cross_entropy(h64 @ w64.T, targets).backward()

    def error(chunked: int | None) -> tuple[float, float]:
        h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, _ = lm_loss(h, w, targets, chunked)
        loss.backward()
        assert w.grad.dtype == torch.float32
        rel = lambda a, b: float((a.double() - b).norm() / b.norm())  # noqa: E731
        return rel(w.grad, w64.grad), rel(h.grad, h64.grad)

    plain, chunked = error(None), error(chunk)
    assert chunked[0] < max(2 * plain[0], 4e-3)  # bf16 rounding, not an accumulation drift
    assert chunked[1] < max(2 * plain[1], 4e-3)


@pytest.mark.parametrize(
    "options", [["model=tiny-llama", "model.activation_checkpointing=true"], []]
)
def test_bf16_mixed_training_run_on_cpu(tiny_run, options):
    """Lightning's bf16-mixed on a CPU (autocast matmuls, fp32 weights and optimizer) trains as
    fp32 does: the trained domain's loss falls, and ends within 1 % of the fp32 run's."""
    fp32 = run(tiny_run("trainer.max_steps=6", *options, out="fp32"))
    bf16 = run(
        tiny_run("trainer.precision=bf16-mixed", "trainer.max_steps=6", *options, out="bf16")
    )
    assert bf16["steps"] == 6
    trained = "upstream"  # tiny_run trains on the built-in upstream corpus
    assert bf16["final_val_loss"][trained] < bf16["initial_val_loss"][trained] - 0.05
    for domain, loss in bf16["final_val_loss"].items():
        assert loss == pytest.approx(fp32["final_val_loss"][domain], rel=0.01)


@pytest.mark.parametrize(
    ("model", "seq", "batch", "loss"),
    [("pythia-70m", 512, 4, "chunked"), ("tiny", 128, 16, "chunked"), ("tiny", 100, 3, "plain")],
)
def test_the_benchmarks_matmul_ceiling_counts_the_flops_peak_fraction_counts(
    model, seq, batch, loss
):
    """`bench_train.py`'s `gemm_fraction` times the step's matmuls alone: exactly the 6 N + 12 L d T
    FLOPs per token that `peak_fraction` divides by, so the two fractions compare."""
    import argparse
    import importlib.util

    from cpt.callbacks.throughput import model_flops_per_token
    from cpt.models.presets import config_from_name
    from tests.helpers import REPO

    path = REPO / "scripts" / "bench_train.py"
    spec = importlib.util.spec_from_file_location("bench_train", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = argparse.Namespace(model=model, seq=seq, batch=batch, loss=loss)
    counted = sum(c * 2 * b * m * k * n for c, b, m, k, n in bench.step_matmuls(args))
    expected = model_flops_per_token(config_from_name(model), seq) * batch * seq
    assert counted == pytest.approx(expected, rel=1e-12)


_REUSE = """
import resource, sys, torch
from cpt.allocator import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else False
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(60):  # a 64 MiB tensor made and freed as every step makes its large tensors
    big, small = torch.ones(2**24), torch.ones(1000)
    del big
print(kept, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 2**14)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_kept_freed_memory_is_reused_without_page_faults():
    """glibc as it comes faults a freed 64 MiB block's 16 k pages back in every round; told to
    keep freed memory, its heap grows for a few rounds (how many depends on the layout of the
    small blocks between) and then the block is reused without faults (cpt/allocator.py)."""
    from tests.helpers import REPO

    def blocks_faulted(mode: str) -> tuple[str, int]:  # in 64 MiB blocks' worth of pages
        done = subprocess.run(
            [sys.executable, "-c", _REUSE, mode], capture_output=True, text=True, cwd=REPO
        )
        kept, blocks = done.stdout.split()
        return kept, int(blocks)

    kept, blocks = blocks_faulted("keep")
    assert kept == "True" and blocks <= 20  # bounded: 6 to 12 rounds' worth where measured
    assert blocks_faulted("as-it-comes")[1] >= 58  # every round


@pytest.mark.parametrize("keep", [True, False])
def test_cpu_training_keeps_freed_memory_unless_told_not_to(tiny_run, monkeypatch, keep):
    import cpt.train

    calls = []
    monkeypatch.setattr(cpt.train, "keep_freed_memory", lambda: calls.append(1) or True)
    run(tiny_run(f"keep_freed_memory={str(keep).lower()}", "trainer.max_steps=1"))
    assert calls == ([1] if keep else [])


def test_the_overhead_benchmarks_clock_counts_the_model_and_nothing_else():
    """`bench_overhead.py`'s `ModelClock`: a training step from its forward pass to its optimizer
    step, each forward pass without gradients of the whole model once (not its blocks'), and not
    the time between them."""
    import importlib.util
    import time

    from tests.helpers import REPO

    spec = importlib.util.spec_from_file_location(
        "bench_overhead", REPO / "scripts" / "bench_overhead.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    model = build_model(config_from_name("tiny"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.randint(0, model.config.vocab_size, (2, 17))
    started = time.perf_counter()
    with bench.ModelClock() as clock:
        for _ in range(2):
            model(ids[:, :-1], targets=ids[:, 1:])[0].backward()
            time.sleep(0.1)  # inside the step: between its backward and its optimizer step
            optimizer.step()
            optimizer.zero_grad()
            time.sleep(0.2)  # outside
        with torch.no_grad():
            for _ in range(3):
                model(ids)
                time.sleep(0.2)  # outside
    wall = time.perf_counter() - started
    with torch.no_grad():
        model(ids)  # the hooks are gone
    assert (clock.steps, clock.evaluations) == (2, 3)
    assert clock.training >= 0.2
    assert clock.evaluation > 0
    assert wall - clock.training - clock.evaluation >= 1.0
