"""Scale-out strategies beyond Lightning's strings: FSDP wrapped per transformer block.

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
