"""The dtype matmuls run in: autocast's when it is on for the tensor's device, else the tensor's own.

Code that bypasses autocast (custom autograd functions, kernels outside autocast's op lists)
asks here, so that it computes in the precision Lightning's `*-mixed` setting chose.
"""

from __future__ import annotations

import torch


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
