"""What each memory saving keeps and frees, and that the values and gradients stay those of the
plain path: the recomputed layer norm, the MLP's in-place activation gradient, the bf16 loss
head's fused softmax and its weight-gradient buffer widened inside the fp32 gradient's storage."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cpt.models.loss import _low_half, _widen_in_place, lm_loss
from cpt.models.presets import config_from_name
from cpt.models.recompute import activation_linear, layer_norm_linear
from cpt.models.registry import build_model


def _saved_bytes(fn, keep=lambda saved: True) -> tuple:  # noqa: ANN001
    """`fn()` and the bytes of the distinct storages autograd keeps for backward (those `keep`s)."""
    storages = {}

    def pack(saved: torch.Tensor) -> torch.Tensor:
        if keep(saved):
            storages[saved.untyped_storage().data_ptr()] = saved.untyped_storage().nbytes()
        return saved

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda saved: saved):
        out = fn()
    return out, sum(storages.values())


def _grads(out: torch.Tensor, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    return list(torch.autograd.grad(out.square().sum(), tensors))


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_layer_norm_linear_keeps_the_input_not_the_norm_and_matches_the_plain_path(affine, bias):
    torch.manual_seed(0)
    x = torch.randn(3, 17, 64, requires_grad=True)
    norm = torch.nn.LayerNorm(64, elementwise_affine=affine)
    if affine:
        torch.nn.init.normal_(norm.weight)
        torch.nn.init.normal_(norm.bias)
    linear = torch.nn.Linear(64, 96, bias=bias)
    params = [x, *norm.parameters(), *linear.parameters()]
    plain, plain_saved = _saved_bytes(lambda: linear(norm(x)))
    ours, ours_saved = _saved_bytes(lambda: layer_norm_linear(x, norm, linear))
    torch.testing.assert_close(ours, plain)
    for got, want in zip(_grads(ours, params), _grads(plain, params)):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # the plain path keeps the norm's output besides its input; ours one [tokens, d] less
    assert plain_saved - ours_saved >= x.numel() * 4


def test_layer_norm_linear_under_bf16_autocast_follows_autocast():
    torch.manual_seed(0)
    x = torch.randn(2, 33, 64, requires_grad=True)
    norm, linear = torch.nn.LayerNorm(64), torch.nn.Linear(64, 32)
    params = [x, *norm.parameters(), *linear.parameters()]
    outs = {}
    for kind, f in {
        "plain": lambda: linear(norm(x)),
        "ours": lambda: layer_norm_linear(x, norm, linear),
    }.items():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outs[kind] = f()
    assert outs["ours"].dtype == outs["plain"].dtype == torch.bfloat16
    torch.testing.assert_close(outs["ours"], outs["plain"])
    for got, want in zip(_grads(outs["ours"], params), _grads(outs["plain"], params)):
        assert got.dtype == want.dtype
        torch.testing.assert_close(got, want, atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("act", ["gelu", "gelu_new", "relu"])
def test_the_mlps_in_place_activation_gradient_matches_autograds(act):
    from cpt.models.gpt_neox import _ACTIVATIONS

    torch.manual_seed(0)
    h = torch.randn(2, 9, 64, requires_grad=True)
    linear = torch.nn.Linear(64, 16)
    params = [h, *linear.parameters()]
    f, f_grad = _ACTIVATIONS[act]
    plain = activation_linear(h, f, linear.weight, linear.bias)
    ours = activation_linear(h, f, linear.weight, linear.bias, f_grad)
    torch.testing.assert_close(ours, linear(f(h)))
    for got, want in zip(_grads(ours, params), _grads(plain, params)):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 300), cols=st.integers(1, 9), seed=st.integers(0, 2**16))
def test_widening_in_place_gives_every_value_its_fp32_self(rows, cols, seed):
    torch.manual_seed(seed)
    values = torch.randn(rows, cols).bfloat16()
    full = torch.empty(rows, cols)
    _low_half(full, torch.bfloat16).copy_(values)
    _widen_in_place(full, torch.bfloat16)
    assert torch.equal(full, values.float())


@pytest.mark.parametrize(("bf16", "within", "mean"), [(True, 0.004, 2e-4), (False, 1e-6, 2.5e-7)])
def test_losses_from_the_softmax_are_the_exact_log_softmax_within_rounding(bf16, within, mean):
    """The loss head's fused softmax gives per-token losses within the rounding of a probability
    (bf16: 0.004 nats; fp32: 1e-6) of the fp32 log-softmax of the same logits, their mean
    much closer; a target too improbable to hold (a loss of hundreds of nats) still gets its
    exact, finite loss."""
    torch.manual_seed(0)
    tokens, vocab, d = 300, 2048, 64
    hidden, weight = torch.randn(tokens, d), torch.randn(vocab, d) * 0.3
    targets = torch.randint(0, vocab, (tokens,))
    weight[7] = -40.0 * torch.sign(hidden[5]) / d**0.5  # token 5's logit for id 7 near -300
    targets[5] = 7
    dtype = torch.bfloat16 if bf16 else torch.float32
    logits = (hidden.to(dtype) @ weight.to(dtype).T).float()
    exact = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    assert exact[5] > 150
    for grads in (True, False):
        with (
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16),
            torch.set_grad_enabled(grads),
        ):
            loss, losses = lm_loss(hidden.clone().requires_grad_(grads), weight, targets, 64)
        assert torch.isfinite(losses).all()
        difference = losses - exact
        # the rounding of a probability (bf16: 2**-9), and fp32's of the reference loss itself
        assert (difference.abs() <= within + 1e-6 * exact).all()
        assert difference.mean().abs() < mean  # round to nearest: no bias in the mean
        assert losses[5].item() == pytest.approx(exact[5].item(), rel=1e-5)
        assert loss.item() == pytest.approx(exact.mean().item(), abs=within / 4)


@pytest.mark.parametrize("precision", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("t", [48, 300])  # PyTorch's attention kernel; by blocks of queries
def test_a_gpt_neox_block_keeps_no_norm_output_and_no_activation_output(precision, t):
    """Per token a block keeps its input, q, k, v, the attention output and the MLP's
    pre-activation for backward, nothing more."""
    config = config_from_name("tiny")
    model = build_model(config)
    b, d, f = 2, config.hidden_size, config.intermediate_size  # b * t: no weight's rows
    x = torch.randn(b, t, d, requires_grad=True)
    cos, sin = model.rotary(torch.arange(t)[None].expand(b, t), x.dtype)
    bf16 = precision == torch.bfloat16
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        # per token (first dimension b or b * t), not a weight or its bf16 copy
        _, saved = _saved_bytes(
            lambda: model.layers[0](x, cos, sin, None), lambda s: s.shape[0] in (b, b * t)
        )
    size = 2 if bf16 else 4
    # x (fp32: the residual stream) + q, k, v, the attention output + the MLP pre-activation
    expected = b * t * (4 * d + size * (4 * d + f))
    assert expected <= saved <= expected * 1.05
