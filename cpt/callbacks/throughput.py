"""`Throughput`: tokens per second, model FLOPs utilisation and peak memory, in the progress bar.

FLOPs per token = 6 N + 12 L d T (N the weights that take part in matmuls: every linear layer's,
the output head included, no biases, norm gains or input embedding, whose lookup costs nothing; L
layers, d width, T sequence length): the dense matmuls
forward and backward plus the attention scores (PaLM's MFU, Chowdhery et al. 2022, appendix B).
MFU is measured against `peak_tflops`; on a CUDA device whose name says one of the accelerators of
`cpt.scale.hardware.ACCELERATORS` that is its dense bf16 peak, elsewhere MFU is not logged unless
`peak_tflops` is given.
"""

from __future__ import annotations

import resource
import sys
import time
from typing import Any

import lightning as L
import torch

from cpt.callbacks.base import CPTCallback, expect, is_count
from cpt.models.registry import matmul_parameters
from cpt.scale.hardware import accelerator_named


def flops_per_token(num_parameters: int, layers: int, width: int, seq_len: int) -> float:
    return 6.0 * num_parameters + 12.0 * layers * width * seq_len


def model_flops_per_token(config: Any, seq_len: int) -> float:
    """6 N + 12 L d T for a model config of either family (N: the weights of every matmul,
    the output head included)."""
    n = matmul_parameters(config)
    return flops_per_token(n, config.num_hidden_layers, config.hidden_size, seq_len)


def default_peak_tflops(device: torch.device) -> float | None:
    """The dense bf16 peak of a known CUDA GPU (by name), else None."""
    if device.type != "cuda":
        return None
    known = accelerator_named(torch.cuda.get_device_name(device))
    return known.peak_bf16_tflops if known else None


class Throughput(CPTCallback):
    def __init__(self, window: int = 20, peak_tflops: float | None = None) -> None:
        expect(is_count(window), "callbacks.throughput.window", "a step count >= 1", window)
        expect(
            peak_tflops is None or peak_tflops > 0,
            "callbacks.throughput.peak_tflops", "a positive TFLOP/s or null", peak_tflops,
        )  # fmt: skip
        self.window, self.peak_tflops = window, peak_tflops
        self._times: list[tuple[float, int]] = []
        self._flops_per_token = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        geometry = trainer.datamodule.geometry  # the run's one batch geometry
        self._flops_per_token = model_flops_per_token(pl_module.model.config, geometry.seq_len)
        self.peak_tflops = self.peak_tflops or default_peak_tflops(pl_module.device)
        self._times = [(time.perf_counter(), pl_module.tokens_seen)]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self._times.append((time.perf_counter(), pl_module.tokens_seen))
        self._times = self._times[-(self.window + 1) :]
        (t0, n0), (t1, n1) = self._times[0], self._times[-1]
        if t1 <= t0:
            return
        tokens_per_s = (n1 - n0) / (t1 - t0)
        pl_module.log("perf/tokens_per_s", tokens_per_s, prog_bar=True)
        if self.peak_tflops:
            devices = max(trainer.world_size, 1)
            mfu = tokens_per_s * self._flops_per_token / (self.peak_tflops * 1e12 * devices)
            pl_module.log("perf/mfu", mfu, prog_bar=True)
        pl_module.log("perf/peak_memory_gb", peak_memory_gb(pl_module.device))


def peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (1e9 if sys.platform == "darwin" else 1e6)
