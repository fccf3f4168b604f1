"""Scale-out: FSDP2 through Lightning's `ModelParallelStrategy`, and what the machine must offer
a run (`check_hardware`).

`trainer=ddp` needs nothing here (`strategy: ddp`). `trainer=fsdp` instantiates `FSDP2`: every
transformer block of either family and then the whole model become `fully_shard` units over a
device mesh of all ranks (or `replicate x shard`: HSDP), so a rank holds 1/shards of every
weight, gradient and AdamW moment and gathers one block's weights at a time. It runs on CPU
processes (gloo) exactly as on GPUs (NCCL). Checkpoints are sharded folders (`cpt/sharded.py`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.strategies import ModelParallelStrategy

from cpt import sharded
from cpt.geometry import BatchGeometry, count_devices
from cpt.models.attention import flash_available
from cpt.models.options import ModelOptions

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
        precision = str(self.precision_plugin.precision)
        if self.root_device.type == "cuda" and precision.startswith("bf16"):
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
        """A sharded folder, written atomically (`cpt.sharded.save`)."""
        path = self.broadcast(str(filepath))  # one name on every rank
        sharded.save(checkpoint, path, rank=self.global_rank, barrier=self.barrier)


def _positive(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def check_hardware(model: ModelOptions, trainer: Any) -> None:
    """What this machine must offer the run; raises ValueError('key: message')."""
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
    check_launchable(trainer, on_gpu)
    if model.attention == "flash":
        why = flash_available()
        if why is not None:
            raise ValueError(f"model.attention: flash {why}")
        if not precision.startswith(("bf16", "16")):
            raise ValueError(
                f"model.attention: flash runs in bf16/fp16 only, but trainer.precision is "
                f"{precision}; use trainer.precision=bf16-mixed"
            )


def check_launchable(trainer: Any, on_gpu: bool) -> None:
    """`trainer.devices` processes per node, as this node can start them: one per GPU, or
    exactly the tasks an external launcher (SLURM, torchrun) started. (Lightning starts any
    number of CPU processes.)"""
    wanted = count_devices(trainer.get("devices", 1), "gpu" if on_gpu else "cpu")
    started = _external_tasks_per_node()
    if started is not None:
        launcher, count = started
        if wanted != count:
            raise ValueError(
                f"trainer.devices: {wanted} processes per node requested but {launcher} started "
                f"{count}; set trainer.devices={count} or change the job's tasks per node"
            )
    elif on_gpu and wanted > torch.cuda.device_count():
        have = torch.cuda.device_count()
        raise ValueError(
            f"trainer.devices: {wanted} requested but this node has {have} "
            f"GPU{'s' if have != 1 else ''}; expected at most {have} (or devices=auto)"
        )


def _external_tasks_per_node() -> tuple[str, int] | None:
    """(launcher, processes per node) when the processes were started outside Lightning."""
    if "LOCAL_WORLD_SIZE" in os.environ:  # torchrun
        return "torchrun", int(os.environ["LOCAL_WORLD_SIZE"])
    from lightning.fabric.plugins.environments import SLURMEnvironment

    if SLURMEnvironment.detect() and "SLURM_NTASKS_PER_NODE" in os.environ:
        return "SLURM", int(os.environ["SLURM_NTASKS_PER_NODE"].split("(")[0])
    return None
