"""What a run will cost before it runs: FLOPs, wall time and GPU-hours, memory per GPU.

Compute: FLOPs per token = 6 N + 12 L d T (`cpt/callbacks/throughput.py`, PaLM's MFU accounting), so
a run costs `flops_per_token x total tokens`; its time is that over `gpus x peak x MFU`.

Memory per GPU, in bytes (an estimate, to see a misfit before paying for it):
- states: weights, gradients and AdamW's two moments, 4 + 4 + 8 bytes per parameter under
  `32-true` and `*-mixed` precision (fp32 master weights), 2 + 2 + 4 under `bf16-true`; FSDP
  divides all three by the shard group (the whole world, or the devices of one node with HSDP,
  `trainer.strategy.shard_size=node`), plus one gathered block at a time (ignored here);
- activations of one micro batch: per layer `s b h (34 + 5 a s / h)` bytes in 16-bit (Korthikanti
  et al. 2022, "Reducing Activation Recomputation in Large Transformer Models", Eq. 1), without the
  `5 a s / h` attention-score term for fused (sdpa/flash) attention, twice that in fp32; with
  activation checkpointing each layer keeps only its input (`2 s b h`) and one layer is recomputed
  at a time; plus the loss head's logits (`s b V` in fp32; with the chunked loss one chunk of
  `cpt.models.loss.CHUNK_ELEMENTS`).
"""

from __future__ import annotations

from typing import Any

from cpt.callbacks.throughput import model_flops_per_token
from cpt.models.loss import CHUNK_ELEMENTS
from cpt.run.geometry import BatchGeometry
from cpt.scale.hardware import ACCELERATORS
from cpt.scale.precision import precision_of


def compute(
    arch: Any, geometry: BatchGeometry, gpus: int, mfu: float, peak_tflops: float
) -> dict[str, float]:
    """FLOPs per token and in total, the wall time and GPU-hours at `mfu` of `peak_tflops`."""
    per_token = model_flops_per_token(arch, geometry.seq_len)
    total = per_token * geometry.total_tokens
    seconds = total / (gpus * peak_tflops * 1e12 * mfu)
    return {
        "flops_per_token": per_token,
        "flops_total": total,
        "wall_time_h": seconds / 3600,
        "gpu_hours": seconds / 3600 * gpus,
    }


def memory_per_gpu(
    arch: Any,
    geometry: BatchGeometry,
    *,
    precision: str,
    shards: int,
    activation_checkpointing: bool,
    fused_attention: bool,
    chunked_loss: bool,
) -> dict[str, float]:
    """Bytes per GPU by kind (see the module's docstring); `shards` 1: replicated (DDP)."""
    n = arch.num_parameters()
    kind = precision_of(precision)
    low = kind.low_weights
    weights, grads, optimizer = (2 * n, 2 * n, 4 * n) if low else (4 * n, 4 * n, 8 * n)
    weights, grads, optimizer = weights / shards, grads / shards, optimizer / shards
    s, b = geometry.seq_len, geometry.micro_batch_size
    h, layers = arch.hidden_size, arch.num_hidden_layers
    heads = arch.num_attention_heads
    width = 1 if kind.low else 2  # 16-bit or fp32 activations
    per_layer = s * b * h * (34 + (0 if fused_attention else 5 * heads * s / h)) * width
    if activation_checkpointing:
        activations = layers * 2 * s * b * h * width + per_layer
    else:
        activations = layers * per_layer
    logits = (
        min(CHUNK_ELEMENTS * 4, s * b * arch.vocab_size * 4)
        if chunked_loss
        else s * b * arch.vocab_size * 4 * 3
    )
    parts = {
        "weights": weights,
        "gradients": grads,
        "optimizer": optimizer,
        "activations": activations + logits,
    }
    return {**{k: v / 2**30 for k, v in parts.items()}, "total": sum(parts.values()) / 2**30}


def peak_tflops_of(accelerator: str) -> float:
    """The dense bf16 peak of a known accelerator name (`ACCELERATORS`)."""
    for key, known in ACCELERATORS.items():
        if key.lower() == accelerator.lower():
            return known.peak_bf16_tflops
    raise ValueError(
        f"plan.accelerator: {accelerator!r} unknown; expected one of {list(ACCELERATORS)} "
        "or plan.peak_tflops=<dense bf16 TFLOP/s>"
    )


def memory_gb_of(accelerator: str) -> float | None:
    known = ACCELERATORS.get(accelerator.upper())
    return known.memory_gb if known else None


def checkpoint_disk(
    arch: Any,
    precision: str,
    steps: int,
    every: int | None,
    keep_last: int | None,
    keep_steps: list[int],
) -> dict[str, float]:
    """Checkpoints a run keeps and the disk they take: each holds the weights and AdamW's two
    moments (4 + 8 bytes per parameter, 2 + 4 in `*-true` 16-bit precision), whole or sharded."""
    n = arch.num_parameters()
    each = n * (6 if precision_of(precision).low_weights else 12)
    saved = list(range(every, steps + 1, every)) if every else []
    newest = saved[-keep_last:] if keep_last else saved
    kept = len(set(newest) | (set(saved) & set(keep_steps))) + 1  # and last.ckpt
    return {"saved": len(saved), "kept": kept, "gb_each": each / 1e9, "gb_total": kept * each / 1e9}
