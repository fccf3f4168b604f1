"""Scale-out: FSDP2 through Lightning's `ModelParallelStrategy`.

`trainer=ddp` needs nothing here (`strategy: ddp`). `trainer=fsdp` instantiates `FSDP2`: every
transformer block of either family and then the whole model become `fully_shard` units over a
device mesh of all ranks (or `replicate x shard`: HSDP), so a rank holds 1/shards of every
weight, gradient and AdamW moment and gathers one block's weights at a time. It runs on CPU
processes (gloo) exactly as on GPUs (NCCL). Checkpoints are sharded folders
(`cpt/checkpoints/sharded.py`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.strategies import ModelParallelStrategy

from cpt.checkpoints import sharded
from cpt.run.geometry import BatchGeometry
from cpt.scale.precision import precision_of

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


class FSDP2(ModelParallelStrategy):
    """FSDP2 (`torch.distributed.fsdp.fully_shard`) per block and on the root.

    `shard_size`: how many ranks share one copy of the state: null (all of them: FSDP), `node`
    (the GPUs of one node, replicated across nodes: HSDP, less inter-node traffic), or a count
    that divides the world size. `param_dtype`: the dtype weights are gathered and computed in
    (`auto`: bf16 under a bf16 precision on GPUs, else the weights' own); gradients are
    reduce-scattered in `reduce_dtype` (fp32) and the master weights and AdamW stay fp32.
    """

    def __init__(
        self,
        shard_size: int | str | None = None,
        param_dtype: str = "auto",
        reduce_dtype: str = "fp32",
        reshard_after_forward: bool = True,
        cpu_offload: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(save_distributed_checkpoint=True, **kwargs)
        if not (shard_size is None or shard_size == "node" or _positive(shard_size)):
            raise ValueError(
                f"shard_size: expected null (all ranks), node or a positive count, got {shard_size!r}"
            )
        if param_dtype not in (*DTYPES, "auto"):
            raise ValueError(
                f"param_dtype: expected auto or one of {list(DTYPES)}, got {param_dtype!r}"
            )
        if reduce_dtype not in DTYPES:
            raise ValueError(f"reduce_dtype: expected one of {list(DTYPES)}, got {reduce_dtype!r}")
        self.shard_size = shard_size
        self.param_dtype, self.reduce_dtype = param_dtype, reduce_dtype
        self.reshard_after_forward, self.cpu_offload = reshard_after_forward, cpu_offload
        self.fsdp_mesh: Any = None

    def mesh_shape(self, world_size: int, devices_per_node: int) -> tuple[int, int]:
        """(replicas, shards) of the device mesh; raises ValueError('shard_size: ...')."""
        shards = {None: world_size, "node": devices_per_node}.get(self.shard_size, self.shard_size)
        if world_size % shards:
            raise ValueError(
                f"shard_size: {self.shard_size} ({shards} ranks per shard group) does not divide "
                f"the world size {world_size}; expected a divisor of it"
            )
        return world_size // shards, shards

    def check(self, geometry: BatchGeometry) -> None:
        """The callback protocol's check, for the strategy: the mesh fits the world."""
        self.mesh_shape(geometry.world_size, geometry.devices)

    def setup_environment(self) -> None:
        from torch.distributed.device_mesh import init_device_mesh

        world = self.num_nodes * self.num_processes
        self._data_parallel_size, self._tensor_parallel_size = world, 1
        super().setup_environment()  # the process group, Lightning's own (world x 1) mesh
        replicas, shards = self.mesh_shape(world, self.num_processes)
        kind = self.root_device.type
        self.fsdp_mesh = (
            init_device_mesh(kind, (shards,), mesh_dim_names=("shard",))
            if replicas == 1
            else init_device_mesh(kind, (replicas, shards), mesh_dim_names=("replicate", "shard"))
        )

    def shard(self, model: torch.nn.Module) -> None:
        """`fully_shard` every block, then the root (embeddings, final norm, head); idempotent,
        as Lightning calls `configure_model` for validation and again for fitting."""
        from torch.distributed.fsdp import (
            CPUOffloadPolicy,
            FSDPModule,
            MixedPrecisionPolicy,
            fully_shard,
        )

        if isinstance(model, FSDPModule):
            return
        options: dict[str, Any] = {
            "mesh": self.fsdp_mesh,
            "mp_policy": MixedPrecisionPolicy(
                param_dtype=self._param_dtype(), reduce_dtype=DTYPES[self.reduce_dtype]
            ),
        }
        if self.cpu_offload:
            options["offload_policy"] = CPUOffloadPolicy()
        for block in model.layers:
            fully_shard(block, reshard_after_forward=self.reshard_after_forward, **options)
        fully_shard(model, **options)  # the root keeps its weights gathered between passes

    def summary(self) -> dict[str, Any]:
        """What `summary.json` records of the sharding (the callback protocol's second half)."""
        mesh = self.fsdp_mesh
        names = mesh.mesh_dim_names if mesh is not None else ()
        return {
            "fsdp": {
                "mesh": dict(zip(names, mesh.shape)) if mesh is not None else {},
                "param_dtype": str(self._param_dtype() or "as stored").removeprefix("torch."),
                "reduce_dtype": self.reduce_dtype,
            }
        }

    def _param_dtype(self) -> torch.dtype | None:
        if self.param_dtype != "auto":
            return DTYPES[self.param_dtype]
        precision = precision_of(self.precision_plugin.precision)
        if self.root_device.type == "cuda" and precision.compute == "bf16":
            return torch.bfloat16
        return None  # the weights' own dtype

    def load_checkpoint(self, checkpoint_path: Any, weights_only: bool | None = None) -> Any:
        """A sharded folder through DCP (resharded to this world); a single file (a run without
        FSDP) gathered by name into the shards, AdamW moments included."""
        path = Path(self.broadcast(str(checkpoint_path)))
        if sharded.is_sharded(path):
            return super().load_checkpoint(path, weights_only=weights_only)
        return sharded.load_whole(self.lightning_module, self.optimizers, path)

    def save_checkpoint(
        self, checkpoint: dict[str, Any], filepath: Any, storage_options: Any = None
    ) -> None:
        """A sharded folder, written atomically (`cpt.checkpoints.sharded.save`)."""
        path = self.broadcast(str(filepath))  # one name on every rank
        sharded.save(checkpoint, path, rank=self.global_rank, barrier=self.barrier)


def _positive(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
