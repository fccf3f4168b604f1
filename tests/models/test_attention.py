"""Document-aware packing: positions restart and attention never crosses a document boundary."""

from __future__ import annotations

import pytest
import torch

from cpt.models import GPTNeoX, config_from_name
from cpt.models.attention import (
    Documents,
    _packed_sdpa,
    attend,
    cu_seqlens,
    document_mask,
    packed_method,
)


def test_mask_is_block_diagonal_and_causal():
    mask = document_mask(torch.tensor([[0, 0, 1, 1, 1, 2]]))[0, 0]
    expected = torch.tensor(
        [
            [1, 0, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [0, 0, 1, 0, 0, 0],
            [0, 0, 1, 1, 0, 0],
            [0, 0, 1, 1, 1, 0],
            [0, 0, 0, 0, 0, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(mask, expected)
    assert cu_seqlens(torch.tensor([[0, 0, 1, 1, 1, 2], [0, 1, 1, 1, 1, 1]])).tolist() == [
        0,
        2,
        5,
        6,
        7,
        12,
    ]


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_a_token_never_attends_across_a_document_boundary(attention):
    torch.manual_seed(0)
    model = GPTNeoX(config_from_name("tiny"), attention=attention).eval()
    segments = torch.tensor([[0] * 10 + [1] * 14])
    positions = torch.tensor([list(range(10)) + list(range(14))])
    x = torch.randint(0, 4096, (1, 24))
    y = x.clone()
    y[0, :10] = torch.randint(0, 4096, (10,))  # change only the first document
    with torch.no_grad():
        a = model(x, positions, segments)
        b = model(y, positions, segments)
        alone = model(x[:, 10:])  # the second document on its own, from position 0
    assert torch.allclose(a[0, 10:], b[0, 10:], atol=1e-5)  # the second document did not see it
    assert torch.allclose(a[0, 10:], alone[0], atol=1e-4)  # exactly as if packed alone
    assert not torch.allclose(a[0, :10], b[0, :10])


def test_backends_agree_with_document_masks():
    torch.manual_seed(1)
    sdpa = GPTNeoX(config_from_name("tiny"), attention="sdpa").eval()
    eager = GPTNeoX(config_from_name("tiny"), attention="eager").eval()
    eager.load_state_dict(sdpa.state_dict())
    segments = torch.tensor([[0] * 5 + [1] * 11, [0] * 16])
    positions = torch.tensor([list(range(5)) + list(range(11)), list(range(16))])
    x = torch.randint(0, 4096, (2, 16))
    with torch.no_grad():
        assert torch.allclose(
            sdpa(x, positions, segments), eager(x, positions, segments), atol=1e-5
        )


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
