"""`BatchGeometry`: how many sequences and tokens one optimizer step takes, computed once per run.

Validation, the datamodule's mixture, the LR schedule (budgets in tokens), the `run_tokens`
resolver, `Throughput` and `summary.json` all read this one object, so they cannot disagree:

    global batch    = micro_batch_size x devices x num_nodes x accumulate
    tokens per step = global batch x seq_len
    total tokens    = tokens per step x max_steps

`data.global_batch_size`, when set, fixes the global batch and the accumulation follows from it
(it must divide exactly); otherwise `trainer.accumulate_grad_batches` is the accumulation. The run's
length is `trainer.max_steps`, or `trainer.max_tokens` as the papers state budgets (then
`max_steps = round(max_tokens / tokens per step)`; giving both is an error).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class BatchGeometry:
    micro_batch_size: int  # sequences per device per forward pass
    devices: int  # processes per node
    num_nodes: int
    accumulate: int  # micro-batches per optimizer step on each device
    seq_len: int  # tokens per sequence (targets; each window holds seq_len + 1 tokens)
    max_steps: int  # optimizer steps of the run

    def __post_init__(self) -> None:
        for key in ("micro_batch_size", "devices", "num_nodes", "accumulate", "seq_len"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key}: expected a positive integer, got {value!r}")
        if isinstance(self.max_steps, bool) or not isinstance(self.max_steps, int):
            raise ValueError(f"max_steps: expected a positive step count, got {self.max_steps!r}")
        if self.max_steps < 1:
            raise ValueError(f"max_steps: expected a positive step count, got {self.max_steps}")

    @property
    def world_size(self) -> int:
        return self.devices * self.num_nodes

    @property
    def global_batch(self) -> int:
        """Sequences per optimizer step, over every device and accumulated micro-batch."""
        return self.micro_batch_size * self.world_size * self.accumulate

    @property
    def tokens_per_step(self) -> int:
        return self.global_batch * self.seq_len

    @property
    def total_tokens(self) -> int:
        return self.tokens_per_step * self.max_steps

    def to_dict(self) -> dict[str, int]:
        """Every field and derived number, for `summary.json` and the logs."""
        return {
            **asdict(self),
            "world_size": self.world_size,
            "global_batch": self.global_batch,
            "tokens_per_step": self.tokens_per_step,
            "total_tokens": self.total_tokens,
        }

    @classmethod
    def from_config(cls, data: Any, trainer: Any) -> BatchGeometry:
        """From the `data` and `trainer` config groups; raises ValueError('key: message')."""
        devices = count_devices(trainer.get("devices", 1), trainer.get("accelerator", "auto"))
        nodes = trainer.get("num_nodes", 1)
        accumulate = trainer.get("accumulate_grad_batches", 1)
        micro = data.micro_batch_size
        if data.global_batch_size is not None:
            size = data.global_batch_size
            per_pass = micro * devices * nodes
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise ValueError(f"data.global_batch_size: expected a positive integer, got {size}")
            if size % per_pass:
                raise ValueError(
                    f"data.global_batch_size: {size} is not divisible by micro_batch_size x "
                    f"devices x num_nodes = {micro} x {devices} x {nodes} = {per_pass}"
                )
            if accumulate not in (1, size // per_pass):
                raise ValueError(
                    f"trainer.accumulate_grad_batches: {accumulate} contradicts "
                    f"data.global_batch_size={size} (which needs {size // per_pass})"
                )
            accumulate = size // per_pass
        try:
            shape = cls(micro, devices, nodes, accumulate, data.seq_len, max_steps=1)
            max_steps, max_tokens = trainer.get("max_steps"), trainer.get("max_tokens")
            steps = run_steps(max_steps, max_tokens, shape.tokens_per_step)
            return replace(shape, max_steps=steps)
        except ValueError as err:
            key, _, message = str(err).partition(": ")
            group = {"micro_batch_size": "data", "seq_len": "data", "accumulate": "trainer"}
            name = {"accumulate": "accumulate_grad_batches"}.get(key, key)
            raise ValueError(f"{group.get(key, 'trainer')}.{name}: {message}") from None


def run_steps(max_steps: Any, max_tokens: Any, tokens_per_step: int) -> Any:
    """The run's optimizer steps from `trainer.max_steps` or `trainer.max_tokens` (one of them)."""
    if max_tokens is None:
        return max_steps
    if max_steps not in (None, -1):
        raise ValueError(
            f"max_tokens: {max_tokens} given together with trainer.max_steps={max_steps}; "
            "give one (trainer.max_steps=null)"
        )
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, (int, float)):
        raise ValueError(f"max_tokens: expected a token count, got {max_tokens!r}")
    if max_tokens < tokens_per_step / 2:
        raise ValueError(
            f"max_tokens: {max_tokens:g} tokens are less than one step of {tokens_per_step} tokens"
        )
    return max(1, round(max_tokens / tokens_per_step))


def count_devices(devices: Any, accelerator: str = "auto") -> int:
    """The processes per node a Lightning `devices` value starts (`auto`/-1: every visible GPU,
    or one process on a CPU, as Lightning does)."""
    if isinstance(devices, str) and devices.strip().lstrip("-").isdigit():
        devices = int(devices)
    if hasattr(devices, "__len__") and not isinstance(devices, str):  # a list of device ids
        if len(devices) == 0:
            raise ValueError("trainer.devices: expected at least one device, got an empty list")
        return len(devices)
    if devices in ("auto", -1):
        import torch

        gpu = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
        return torch.cuda.device_count() if gpu else 1
    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
        raise ValueError(
            f"trainer.devices: expected a positive count, a list or auto, got {devices!r}"
        )
    return devices
