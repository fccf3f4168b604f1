"""Scale-out strategies beyond Lightning's strings (FSDP wrapped per transformer block), and
what the machine must offer a run (`check_hardware`).

`trainer=ddp` needs nothing here (`strategy: ddp`). `trainer=fsdp` instantiates
`fsdp_strategy` from the trainer config: each block of either model family becomes one FSDP unit,
so only one block's full parameters exist at a time, and Lightning's `precision` (e.g.
`bf16-mixed`) becomes FSDP's mixed-precision policy (bf16 compute and communication, fp32 master
weights and optimizer state).
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.strategies import FSDPStrategy

from cpt.models import gpt_neox, llama
from cpt.models.attention import flash_available
from cpt.models.options import ModelOptions

BLOCKS = {gpt_neox.Block, llama.Block}
SHARDING = ("FULL_SHARD", "SHARD_GRAD_OP", "HYBRID_SHARD", "NO_SHARD")


def fsdp_strategy(
    sharding_strategy: str = "FULL_SHARD",
    state_dict_type: str = "full",
    activation_checkpointing: bool = False,
    cpu_offload: bool = False,
    device_mesh: list[int] | None = None,
    **kwargs: Any,
) -> FSDPStrategy:
    """FSDP with one unit per block; `state_dict_type=full` keeps checkpoints single `.ckpt` files.

    `HYBRID_SHARD` shards within a node and replicates across nodes (less inter-node traffic on
    multi-node SLURM jobs; `device_mesh` [replicas, shards] sets the split, by default
    nodes x GPUs per node); `SHARD_GRAD_OP` keeps parameters gathered between forward and backward.
    """
    if sharding_strategy not in SHARDING:
        raise ValueError(
            f"sharding_strategy {sharding_strategy!r} unknown; expected one of {list(SHARDING)}"
        )
    if state_dict_type not in ("full", "sharded"):
        raise ValueError(f"state_dict_type {state_dict_type!r} unknown; expected full or sharded")
    return FSDPStrategy(
        auto_wrap_policy=BLOCKS,
        activation_checkpointing_policy=BLOCKS if activation_checkpointing else None,
        sharding_strategy=sharding_strategy,
        state_dict_type=state_dict_type,
        cpu_offload=cpu_offload,
        use_orig_params=True,  # parameter names and groups as in the model; needed by compile
        **({"device_mesh": tuple(device_mesh)} if device_mesh else {}),
        **kwargs,
    )


def check_hardware(model: ModelOptions, trainer: Any) -> None:
    """What this machine must offer the run; raises ValueError('key: message')."""
    import torch

    precision = str(trainer.get("precision", "32-true"))
    accelerator = trainer.get("accelerator", "auto")
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"trainer.accelerator: {accelerator} requested but no CUDA device is available"
        )
    if precision.startswith("bf16") and on_gpu and not torch.cuda.is_bf16_supported():
        raise ValueError(
            f"trainer.precision: {precision} requested but this GPU has no bf16 support; "
            "use 16-mixed"
        )
    strategy = trainer.get("strategy")
    target = strategy.get("_target_") if hasattr(strategy, "get") else strategy
    if "fsdp" in str(target) and not (on_gpu and torch.cuda.is_available()):
        raise ValueError(
            "trainer.strategy: FSDP needs CUDA GPUs (Lightning runs it on no other accelerator); "
            "use trainer=ddp or the default single-device trainer here"
        )
    if model.attention == "flash":
        why = flash_available()
        if why is not None:
            raise ValueError(f"model.attention: flash {why}")
        if not precision.startswith(("bf16", "16")):
            raise ValueError(
                f"model.attention: flash runs in bf16/fp16 only, but trainer.precision is "
                f"{precision}; use trainer.precision=bf16-mixed"
            )
