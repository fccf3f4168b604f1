"""Document-aware packing: positions restart and attention never crosses a document boundary."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cpt.data.windows import TokenWindows
from cpt.models import GPTNeoX, config_from_name
from cpt.models.attention import cu_seqlens, document_mask


def test_windows_carry_positions_and_segments():
    tokens = np.arange(100) % 50
    offsets = np.array([0, 7, 30, 31, 64])  # documents of 7, 23, 1, 33, 36 tokens
    windows = TokenWindows(tokens, seq_len=16, offsets=offsets, document_aware=True)
    item = windows[1]  # positions 16..31
    assert item["input_ids"].tolist() == list(range(16, 33))
    assert item["position_ids"].tolist() == [9 + i for i in range(14)] + [0, 0]
    assert item["segment_ids"].tolist() == [0] * 14 + [1, 2]


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
