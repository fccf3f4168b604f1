"""Training composed through the real Hydra config, on CPU, for a few steps."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cpt.config import ConfigError
from cpt.scale.hardware import processor
from cpt.train import run

REPO = Path(__file__).resolve().parents[2]


def test_bf16_where_the_gpu_lacks_it(tiny_run, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    with pytest.raises(
        ConfigError, match="^trainer.precision: bf16-mixed requested but this GPU has no bf16"
    ):
        run(tiny_run("trainer.precision=bf16-mixed", "trainer.accelerator=gpu"))


def test_flash_in_fp32_is_refused_where_flash_could_run(monkeypatch):
    """The check itself (on a CPU the missing GPU is reported first)."""
    import cpt.scale.hardware as distributed
    from cpt.models.options import ModelOptions

    monkeypatch.setattr(distributed, "flash_available", lambda: None)
    with pytest.raises(
        ValueError, match=r"^model.attention: flash runs in bf16/fp16 only, but trainer.precision"
    ):
        distributed.check_hardware(
            ModelOptions(attention="flash"), {"precision": "32-true", "accelerator": "cpu"}
        )
    distributed.check_hardware(  # and accepts bf16
        ModelOptions(attention="flash"), {"precision": "bf16-mixed", "accelerator": "cpu"}
    )


def test_an_srun_job_without_tasks_per_node_is_refused(monkeypatch):
    """Lightning places ranks by tasks per node and would refuse it after files exist."""
    from cpt.scale.hardware import check_launchable

    for key, value in {"SLURM_NTASKS": "2", "SLURM_JOB_ID": "9", "SLURM_JOB_NAME": "train",
                       "SLURM_PROCID": "0"}.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("SLURM_NTASKS_PER_NODE", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    with pytest.raises(ValueError, match=r"^trainer.devices: the SLURM job has --ntasks=2 without"):
        check_launchable({"devices": 2, "accelerator": "cpu"}, on_gpu=False)
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "2")
    check_launchable({"devices": 2, "accelerator": "cpu"}, on_gpu=False)  # as srun started them


def test_the_processor_line_names_the_model_and_its_matrix_instructions(tmp_path: Path):
    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\nmodel name\t: Intel Xeon\nflags\t\t: fpu avx2 avx512f amx_tile amx_bf16\n"
    )
    line = processor(info)
    assert line.startswith("Intel Xeon (") and "cores; amx_bf16 amx_tile avx512f avx2)" in line
    info.write_text("model name\t: AMD EPYC\nflags\t\t: fpu sse2\n")
    assert processor(info).endswith("none of amx_bf16/amx_tile/avx512_bf16/avx512f/avx2)")


def test_the_kernel_line_says_whether_onednn_ran_each_matmul():
    from cpt.scale.hardware import cpu_kernels, onednn_matmuls

    log = (
        "probe torch.float32\n"
        "probe torch.bfloat16\n"
        "onednn_verbose,v1,info,cpu,isa:Intel AVX-512 with Intel AMX\n"
        "onednn_verbose,v1,primitive,exec,cpu,reorder,jit:uni,undef,src:bf16,,16x3,0.01\n"
        "onednn_verbose,v1,primitive,exec,cpu,matmul,brg_matmul:avx512_core_amx,undef,"
        "src:bf16::blocked:ab::f0 wei:bf16 dst:bf16,,256x256:256x256,0.05\n"
    )
    assert onednn_matmuls(log) == {"bf16": "oneDNN brg_matmul:avx512_core_amx"}
    line = cpu_kernels()  # this machine, probed for real
    assert line.startswith(f"ATen {torch.backends.cpu.get_cpu_capability()}; fp32 matmul: ")
    assert "; bf16 matmul: " in line
