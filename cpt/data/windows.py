"""Fixed windows of `seq_len + 1` tokens over a flat token file: inputs are `w[:-1]`, targets `w[1:]`."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset


class TokenWindows(Dataset):
    """Non-overlapping windows; consecutive windows share one boundary token (the next target)."""

    def __init__(self, tokens: np.ndarray, seq_len: int) -> None:
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        self.tokens = tokens
        self.seq_len = seq_len
        self.num_windows = max(0, (len(tokens) - 1) // seq_len)

    def __len__(self) -> int:
        return self.num_windows

    def __getitem__(self, index: int) -> torch.Tensor:
        if not 0 <= index < self.num_windows:
            raise IndexError(index)
        start = index * self.seq_len
        window = np.asarray(self.tokens[start : start + self.seq_len + 1], dtype=np.int64)
        return torch.from_numpy(window)
