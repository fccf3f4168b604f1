"""What the machine must offer a run, checked before anything is written; the accelerators the
plan and the MFU know; the processor a measured figure came from.
"""

from __future__ import annotations

import os
import platform
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cpt.models.attention import flash_available
from cpt.models.options import ModelOptions
from cpt.run.geometry import count_devices
from cpt.scale.precision import precision_of

# Lightning warns on every run of a machine that has `srun` (a cluster's login node, the local test
# cluster) when the run was not started by it: a one-process run there is not a mistake.
warnings.filterwarnings("ignore", message=r"The `srun` command is available on your system")


@dataclass(frozen=True)
class Accelerator:
    peak_bf16_tflops: float  # dense, without sparsity
    memory_gb: float


# One table for the plan's estimates and the throughput callback's MFU (vendors' data sheets).
ACCELERATORS = {
    "H100": Accelerator(989.0, 80.0),
    "H200": Accelerator(989.0, 141.0),
    "A100": Accelerator(312.0, 80.0),
}


def accelerator_named(name: str) -> Accelerator | None:
    """The accelerator a name (a plan option, or a CUDA device's name) mentions, if any."""
    return next((a for key, a in ACCELERATORS.items() if key.lower() in name.lower()), None)


# The CPU's matrix and vector instructions that decide a step's speed (`/proc/cpuinfo` flags).
MATRIX_FLAGS = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx2")


def processor(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The processor's name, its cores and matrix/vector instructions, e.g. `Intel Xeon (2 cores;
    amx_bf16 amx_tile avx512_bf16 avx512f avx2)`: every measured time or speed names where it
    ran."""
    name, flags = platform.processor() or "unknown processor", set()
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                name = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    have = [f for f in MATRIX_FLAGS if f in flags]
    return (
        f"{name} ({os.cpu_count()} cores; {' '.join(have) or 'none of ' + '/'.join(MATRIX_FLAGS)})"
    )


_KERNEL_PROBE = """
import torch
a = torch.randn(256, 256)
for dtype in (torch.float32, torch.bfloat16):
    print("probe", dtype, flush=True)
    torch.mm(a.to(dtype), a.to(dtype))
"""


def cpu_kernels() -> str:
    """Which kernels a CPU matmul runs in fp32 and bf16, e.g. `ATen AVX2; fp32 matmul: MKL;
    bf16 matmul: oneDNN brg_matmul:avx512_core_amx`: whether the matrix units did the work. Read
    from oneDNN's own log (`ONEDNN_VERBOSE`) in a fresh process; a matmul oneDNN did not run went
    to ATen's own BLAS path (MKL for fp32)."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _KERNEL_PROBE],
        capture_output=True,
        text=True,
        env={**os.environ, "ONEDNN_VERBOSE": "1"},
        check=True,
    )
    ran = onednn_matmuls(done.stdout)
    capability = torch.backends.cpu.get_cpu_capability()
    blas = {"fp32": "MKL" if torch.backends.mkl.is_available() else "ATen BLAS", "bf16": "ATen"}
    kernels = "; ".join(f"{d} matmul: {ran.get(d, blas[d])}" for d in ("fp32", "bf16"))
    return f"ATen {capability}; {kernels}"


def onednn_matmuls(log: str) -> dict[str, str]:
    """From the probe's output, the oneDNN implementation that ran each precision's matmul
    (`onednn_verbose,v1,primitive,exec,cpu,<kind>,<implementation>,...` lines)."""
    ran: dict[str, str] = {}
    dtype = ""
    for line in log.splitlines():
        if line.startswith("probe "):
            dtype = "fp32" if "float32" in line else "bf16"
        fields = line.split(",")
        if line.startswith("onednn_verbose") and "exec" in fields and dtype not in ran:
            at = fields.index("exec")
            if fields[at + 2] in ("matmul", "inner_product"):
                ran[dtype] = f"oneDNN {fields[at + 3]}"
    return ran


def check_hardware(model: ModelOptions, trainer: Any) -> None:
    """What this machine must offer the run; raises ValueError('key: message')."""
    precision = precision_of(trainer.get("precision", "32-true"))
    accelerator = trainer.get("accelerator", "auto")
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"trainer.accelerator: {accelerator} requested but no CUDA device is available"
        )
    if precision.compute == "bf16" and on_gpu and not torch.cuda.is_bf16_supported():
        raise ValueError(
            f"trainer.precision: {precision.name} requested but this GPU has no bf16 support; "
            "use 16-mixed"
        )
    check_launchable(trainer, on_gpu)
    if model.attention == "flash":
        why = flash_available()
        if why is not None:
            raise ValueError(f"model.attention: flash {why}")
        if not precision.low:
            raise ValueError(
                f"model.attention: flash runs in bf16/fp16 only, but trainer.precision is "
                f"{precision.name}; use trainer.precision=bf16-mixed"
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

    if not SLURMEnvironment.detect():
        return None
    if "SLURM_NTASKS_PER_NODE" in os.environ:
        return "SLURM", int(os.environ["SLURM_NTASKS_PER_NODE"].split("(")[0])
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1:  # Lightning would refuse it after files exist
        raise ValueError(
            f"trainer.devices: the SLURM job has --ntasks={os.environ['SLURM_NTASKS']} without "
            "--ntasks-per-node; Lightning places ranks by tasks per node: submit with "
            "--ntasks-per-node=<processes per node> (and --nodes)"
        )
    return None
