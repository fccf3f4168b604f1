"""What each memory saving keeps and frees, and that the values and gradients stay those of the
plain path: the recomputed layer norm, the MLP's in-place activation gradient, the bf16 loss
head's fused softmax and its weight-gradient buffer widened inside the fp32 gradient's storage."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import cpt.models.fast as fast
from cpt.models.attention import attend
from cpt.models.fast.blocked_attention import BLOCK, blocked_causal_attention
from cpt.models.fast.loss_head import low_half, widen_in_place
from cpt.models.fast.recompute import activation_linear, layer_norm_linear
from cpt.models.loss import lm_loss
from cpt.models.presets import config_from_name
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
    from cpt.models.fast import ACTIVATIONS

    torch.manual_seed(0)
    h = torch.randn(2, 9, 64, requires_grad=True)
    linear = torch.nn.Linear(64, 16)
    params = [h, *linear.parameters()]
    f, f_grad = ACTIVATIONS[act]
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
    low_half(full, torch.bfloat16).copy_(values)
    widen_in_place(full, torch.bfloat16)
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


def _logits_and_grads(model, ids) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad()
    logits = model(ids)
    logits.float().logsumexp(-1).sum().backward()
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("preset", ["tiny", "tiny-llama"])
def test_the_model_with_its_fast_paths_is_the_plain_model(preset):
    """The model files call `fast.*` by their plain meaning; with the fast paths on (the default)
    logits and every gradient equal the plain layers' (`fast.plain()`) in fp32."""
    torch.manual_seed(0)
    model = build_model(config_from_name(preset))
    ids = torch.randint(0, model.config.vocab_size, (2, 24))
    fast_logits, fast_grads = _logits_and_grads(model, ids)
    with fast.plain():
        plain_logits, plain_grads = _logits_and_grads(model, ids)
    torch.testing.assert_close(fast_logits, plain_logits, atol=1e-5, rtol=1e-5)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(fast_grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)


def test_in_bf16_on_a_cpu_the_fast_paths_stay_within_bf16_of_the_plain_model():
    """Past one block of queries the blocked attention takes over: the logits stay as close to
    the plain model's as two bf16 computations of the same function can."""
    torch.manual_seed(0)
    model = build_model(config_from_name("tiny"))
    ids = torch.randint(0, model.config.vocab_size, (1, BLOCK + 16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast_logits = model(ids).float()
        with fast.plain():
            assert fast.causal_attention(*(torch.randn(1, 1, BLOCK + 1, 8),) * 3) is None
            plain_logits = model(ids).float()
    assert (fast_logits - plain_logits).abs().max() < 0.1 * plain_logits.abs().max()
