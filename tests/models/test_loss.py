"""The speed and memory options change nothing but speed and memory: chunked loss, attention
backends, activation checkpointing, torch.compile (and its fallback)."""

from __future__ import annotations

import pytest
import torch

from cpt.models.loss import chunk_tokens, lm_loss
from cpt.models.presets import config_from_name
from cpt.models.registry import build_model


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


@pytest.mark.parametrize("chunk", [None, 1, 7, 64, 1000])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_z_loss_adds_coef_log_z_squared_with_its_gradient_on_every_path(chunk, dtype):
    """Against autograd through `logsumexp` on full fp32 logits: the loss, the z term, and the
    gradients to the hidden states and the output weight; the per-token losses stay CE."""
    from cpt.models.loss import lm_loss_terms

    torch.manual_seed(1)
    hidden = (torch.randn(2, 40, 32) * 3).requires_grad_()
    weight = torch.randn(1000, 32, requires_grad=True)
    targets = torch.randint(0, 1000, (2, 40))
    coef = 0.01
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        logits = torch.nn.functional.linear(hidden, weight).float()
    ce = torch.nn.functional.cross_entropy(
        logits.view(-1, 1000), targets.view(-1), reduction="none"
    )
    z_ref = coef * torch.logsumexp(logits, dim=-1).square().mean()
    (ce.mean() + z_ref).backward()
    expected = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        loss, tokens, z = lm_loss_terms(hidden, weight, targets, chunk, coef)
    loss.backward()
    tol = {"atol": 1e-4, "rtol": 1e-4} if dtype == torch.float32 else {"atol": 2e-2, "rtol": 2e-2}
    assert z.item() == pytest.approx(z_ref.item(), rel=1e-5) and z.item() > 0.1
    assert loss.item() == pytest.approx(ce.mean().item() + z_ref.item(), rel=1e-5)
    torch.testing.assert_close(tokens, ce.detach().view(targets.shape), atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(hidden.grad, expected[0], **tol)
    torch.testing.assert_close(weight.grad.float(), expected[1], **tol)


@pytest.mark.parametrize("loss", ["chunked", "plain"])
def test_without_z_loss_the_model_computes_bitwise_what_lm_loss_does(loss):
    from cpt.models.loss import lm_loss_terms

    torch.manual_seed(2)
    model = build_model(config_from_name("tiny"))
    model.set_loss(loss, 0.0)
    ids = torch.randint(0, 4096, (2, 17))
    got, tokens = model(ids[:, :-1], targets=ids[:, 1:])
    hidden = model.hidden_states(ids[:, :-1])
    ref, ref_tokens = lm_loss(hidden, model.head_weight, ids[:, 1:], model.loss_chunk)
    assert torch.equal(got, ref) and torch.equal(tokens, ref_tokens) and model.z_term is None
    model.set_loss(loss, 1e-3)
    with_z, _ = model(ids[:, :-1], targets=ids[:, 1:])
    assert model.z_term is not None and model.z_term > 0
    assert with_z.item() == pytest.approx((ref + model.z_term).item(), rel=1e-6)
    _, _, z = lm_loss_terms(hidden, model.head_weight, ids[:, 1:], model.loss_chunk, 0.0)
    assert z is None
