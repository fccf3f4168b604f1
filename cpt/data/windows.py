"""Fixed windows of `seq_len + 1` tokens over a split's token stream.

Inputs are `w[:-1]`, targets `w[1:]`; consecutive windows share one boundary token (or, with
`stride = seq_len + 1`, none: the fixed sequences of a pre-shuffled Pythia file). In the
document-aware mode a window also carries, per input position, the document it belongs to
(`segment_ids`, 0 for the first one in the window) and its position inside that document
(`position_ids`), so attention and rotary positions can restart at every document boundary.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset


class TokenWindows(Dataset):
    def __init__(
        self,
        tokens,
        seq_len: int,
        offsets: np.ndarray | None = None,
        document_aware: bool = False,
        stride: int | None = None,
    ) -> None:
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        if document_aware and offsets is None:
            raise ValueError("document_aware windows need the document offsets")
        self.tokens = tokens
        self.seq_len = seq_len
        self.offsets = offsets
        self.document_aware = document_aware
        self.stride = stride or seq_len  # seq_len + 1: windows share no token (Pythia sequences)
        if self.stride < seq_len:
            raise ValueError(f"stride must be >= seq_len={seq_len}, got {self.stride}")
        self.num_windows = max(0, (len(tokens) - seq_len - 1) // self.stride + 1)

    def __len__(self) -> int:
        return self.num_windows

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < self.num_windows:
            raise IndexError(index)
        start = index * self.stride
        window = np.asarray(self.tokens[start : start + self.seq_len + 1], dtype=np.int64)
        item = {"input_ids": torch.from_numpy(window)}
        if self.document_aware:
            positions = start + np.arange(self.seq_len)
            docs = np.searchsorted(self.offsets, positions, side="right") - 1
            item["position_ids"] = torch.from_numpy(positions - self.offsets[docs])
            item["segment_ids"] = torch.from_numpy(docs - docs[0])
        return item
