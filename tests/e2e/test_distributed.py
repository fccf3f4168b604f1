"""DDP and FSDP2 on CPU processes: the same training as one process, sharded checkpoints read at
another world size, the memory sharding saves, and the folders `init=ckpt:` and `cpt.export` read
(saves surviving a kill: tests/test_sharded_save.py).

Short real runs (`python -m cpt.train`, gloo) are shared by the tests of this module:

    one     1 process (no FSDP), steps 0-6, the same global batch by accumulation
    fsdp2   2 processes, steps 0-6, sharded checkpoints at steps 3 and 6
    ddp     2 DDP processes, steps 0-6
    down    1 process (no FSDP) resuming fsdp2's step 3, to step 6
    same    2 processes resuming fsdp2's step 3 (with activation checkpointing), to step 6
and for the slow tests:
    fsdp1   FSDP in 1 process, steps 0-6 (the same schedule), a sharded checkpoint at step 3
    up      2 processes resuming fsdp1's step 3, to step 6
    grow    2 FSDP processes resuming one's step 3 (a single file), to step 6
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cpt.checkpoints import sharded
from cpt.checkpoints.files import read_lightning_checkpoint
from cpt.config import ConfigError
from cpt.models.hf import CheckpointError
from cpt.run.initial import initial_model
from cpt.train import run
from tests import helpers
from tests.helpers import REPO, cli, finish

pytestmark = pytest.mark.distributed

COMMON = (
    "trainer.precision=32-true",
    "data.micro_batch_size=4",
    "data.global_batch_size=8",
    "callbacks.checkpoint.every_n_train_steps=3",
)
GAP = ("callbacks=gap", "callbacks.stability_gap.plot=false")  # its curve lives in checkpoints
FSDP = ("trainer=fsdp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true")


def start(out: Path, data_dir: Path, *overrides: str) -> subprocess.Popen:
    return helpers.start(out, data_dir, *COMMON, *overrides)


def train(out: Path, data_dir: Path, *overrides: str) -> dict:
    return finish(start(out, data_dir, *overrides), out)


def run_phases(root: Path, data_dir: Path, phases: list[dict[str, tuple[str, ...]]]) -> None:
    """Each phase's runs at once (each process is one thread; the machine has two cores)."""
    for phase in phases:
        started = {name: start(root / name, data_dir, *args) for name, args in phase.items()}
        for name, process in started.items():
            finish(process, root / name)


STEP3 = "checkpoints/step0000003.ckpt"


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_dir) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fsdp")
    ddp = ("trainer.accelerator=cpu", "trainer.devices=2", "+trainer.strategy=ddp")
    phases = [
        {"one": ("trainer.max_steps=6",), "fsdp2": (*FSDP, *GAP, "trainer.max_steps=6")},
        {
            "ddp": (*ddp, "trainer.max_steps=6"),
            "down": (*GAP, "trainer.max_steps=6", f"resume={root / 'fsdp2' / STEP3}"),
        },
        {
            "same": (
                *FSDP,
                *GAP,
                "trainer.max_steps=6",
                "model.activation_checkpointing=true",
                f"resume={root / 'fsdp2' / STEP3}",
            )
        },
    ]
    run_phases(root, data_dir, phases)
    return {name: root / name for phase in phases for name in phase}


@pytest.fixture(scope="module")
def more_runs(runs, data_dir) -> dict[str, Path]:
    """For the slow tests: 1 process to 2 (a sharded folder, and a single file)."""
    root = runs["one"].parent
    phases = [
        {"fsdp1": (*FSDP, "trainer.devices=1", "trainer.max_steps=6")},
        {
            "up": (*FSDP, "trainer.max_steps=6", f"resume={root / 'fsdp1' / STEP3}"),
            "grow": (*FSDP, "trainer.max_steps=6", f"resume={root / 'one' / STEP3}"),
        },
    ]
    run_phases(root, data_dir, phases)
    return {**runs, **{name: root / name for phase in phases for name in phase}}


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def weights(run: Path, step: int) -> dict[str, torch.Tensor]:
    return read_lightning_checkpoint(run / "checkpoints" / f"step{step:07d}.ckpt")["state_dict"]


def largest_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def test_fsdp_writes_sharded_folders_one_shard_per_rank(runs):
    folder = runs["fsdp2"] / "checkpoints" / "step0000006.ckpt"
    assert folder.is_dir()
    assert sorted(p.name for p in folder.iterdir()) == [
        ".metadata",
        "__0_0.distcp",
        "__1_0.distcp",
        "meta.pt",
    ]
    assert not list((runs["fsdp2"] / "checkpoints").glob(".*"))  # no temporary folder left
    # one process (no FSDP) writes files
    assert (runs["one"] / "checkpoints" / "step0000006.ckpt").is_file()


def test_two_fsdp_processes_train_as_one_process(runs):
    fsdp, one = summary(runs["fsdp2"]), summary(runs["one"])
    assert fsdp["geometry"]["world_size"] == 2 and one["geometry"]["accumulate"] == 2
    assert fsdp["tokens"] == one["tokens"] == 6 * 8 * 32
    assert fsdp["tokens_per_source"] == one["tokens_per_source"]
    for domain, loss in one["initial_val_loss"].items():  # the same model, the same windows
        assert fsdp["initial_val_loss"][domain] == pytest.approx(loss, abs=1e-6)
    for domain, loss in one["final_val_loss"].items():
        assert fsdp["final_val_loss"][domain] == pytest.approx(loss, abs=2e-3)
    # the exact data order: what every source gave, step by step, is the same
    meta = read_lightning_checkpoint(runs["fsdp2"] / "checkpoints" / "step0000006.ckpt", ())
    file = read_lightning_checkpoint(runs["one"] / "checkpoints" / "step0000006.ckpt")
    assert meta["CPTDataModule"]["drawn"] == file["CPTDataModule"]["drawn"]
    assert largest_difference(weights(runs["fsdp2"], 6), weights(runs["one"], 6)) < 1e-5
    _same_health(fsdp, one)  # norms whole over the shards, not one rank's half


def test_two_ddp_processes_train_as_one_process(runs):
    ddp, one = summary(runs["ddp"]), summary(runs["one"])
    assert ddp["geometry"]["world_size"] == 2 and "fsdp" not in ddp
    assert ddp["tokens"] == one["tokens"] == 6 * 8 * 32
    for domain, loss in one["initial_val_loss"].items():
        assert ddp["initial_val_loss"][domain] == pytest.approx(loss, abs=1e-6)
    for domain, loss in one["final_val_loss"].items():
        assert ddp["final_val_loss"][domain] == pytest.approx(loss, abs=1e-4)
    assert largest_difference(weights(runs["ddp"], 6), weights(runs["one"], 6)) < 1e-5
    assert ddp["state_bytes_per_process"] == one["state_bytes_per_process"]  # replicated
    _same_health(ddp, one)  # a replicated gradient counted once


def _same_health(run: dict, one: dict) -> None:
    """The last gradient, weight and update norms of `callbacks.health` equal one process's."""
    assert run["health"].keys() == one["health"].keys() and len(one["health"]) == 5
    for key, value in one["health"].items():
        assert run["health"][key] == pytest.approx(value, rel=1e-3), key


def test_sharding_halves_the_state_each_process_holds(runs):
    fsdp = summary(runs["fsdp2"])["state_bytes_per_process"]
    one = summary(runs["one"])["state_bytes_per_process"]
    for part in ("parameters", "optimizer"):
        assert 0.45 < fsdp[part] / one[part] < 0.55, (part, fsdp[part], one[part])
    assert one["optimizer"] == pytest.approx(2 * one["parameters"], rel=0.01)  # two moments


def test_resuming_a_sharded_checkpoint_equals_the_uninterrupted_run(runs):
    resumed, whole = summary(runs["same"]), summary(runs["fsdp2"])
    assert resumed["steps"] == whole["steps"] == 6 and resumed["tokens"] == whole["tokens"]
    for domain, loss in whole["final_val_loss"].items():
        assert resumed["final_val_loss"][domain] == pytest.approx(loss, abs=1e-6)
    assert largest_difference(weights(runs["same"], 6), weights(runs["fsdp2"], 6)) <= 1e-6
    # the stability-gap curve of steps 0-3 came back with the checkpoint and went on
    for name in ("same", "down"):
        gap = summary(runs[name])["stability_gap"]
        assert gap.keys() == whole["stability_gap"].keys()
        for domain, metrics in whole["stability_gap"].items():
            assert gap[domain] == pytest.approx(metrics, abs=1e-5), (name, domain)


@pytest.mark.parametrize(
    ("run", "reference"),
    [
        ("down", "fsdp2"),
        pytest.param("up", "fsdp2", marks=pytest.mark.slow),
        pytest.param("grow", "one", marks=pytest.mark.slow),
    ],
)
def test_a_checkpoint_resumes_at_another_world_size(request, run, reference):
    """A sharded folder of 2 processes in 1 (gathered whole, no FSDP) and of 1 in 2 (resharded
    on load); a single file of a run without FSDP in 2 FSDP processes (sharded by name)."""
    runs = request.getfixturevalue("runs" if run == "down" else "more_runs")
    resumed, whole = summary(runs[run]), summary(runs[reference])
    assert resumed["resume"].endswith("step0000003.ckpt")
    assert resumed["steps"] == 6 and resumed["tokens"] == whole["tokens"]
    assert resumed["tokens_per_source"] == whole["tokens_per_source"]
    for domain, loss in whole["final_val_loss"].items():
        assert resumed["final_val_loss"][domain] == pytest.approx(loss, abs=1e-5)
    assert largest_difference(weights(runs[run], 6), weights(runs[reference], 6)) < 1e-5


def test_init_and_export_read_a_sharded_folder(runs, tmp_path):
    import transformers

    from cpt.export import export

    folder = runs["fsdp2"] / "checkpoints" / "step0000006.ckpt"
    state = sharded.read(folder, ("state_dict",))["state_dict"]
    initial = initial_model(f"ckpt:{folder}", "tiny")
    assert initial.data_state["drawn"]  # its splits, for the held-out check
    assert largest_difference({f"model.{k}": v for k, v in initial.state.items()}, state) == 0
    exported = export(folder, tmp_path / "hf")
    assert (exported / "tokenizer.json").is_file()  # the run's, found beside checkpoints/
    model = transformers.GPTNeoXForCausalLM.from_pretrained(exported)
    assert torch.equal(model.gpt_neox.embed_in.weight, state["model.embed_in.weight"])


# ---- bad input: one line, before anything is written ------------------------------------------


def test_a_sharded_folder_missing_a_shard_is_refused_before_training(runs, tmp_path, data_dir):
    broken = tmp_path / "broken.ckpt"
    shutil.copytree(runs["fsdp2"] / "checkpoints" / "step0000003.ckpt", broken)
    (broken / "__1_0.distcp").unlink()
    out = tmp_path / "run"
    result = subprocess.run(
        cli(out, data_dir, *FSDP, f"resume={broken}"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: resume: {broken}: shard __1_0.distcp is missing (the checkpoint lists 2 "
        "shards: __0_0.distcp, __1_0.distcp)"
    )
    assert not out.exists()
    with pytest.raises(CheckpointError, match="shard __1_0.distcp is missing"):
        initial_model(f"ckpt:{broken}", None)


def test_a_checkpoint_of_another_model_is_refused(runs, tiny_run):
    folder = runs["fsdp2"] / "checkpoints" / "step0000003.ckpt"
    cfg = tiny_run(f"resume={folder}", "model=tiny-llama")
    with pytest.raises(ConfigError, match=rf"^resume: {folder} holds another model \(family"):
        run(cfg)
    cfg = tiny_run(f"resume={folder}", "model=pythia-14m")
    with pytest.raises(ConfigError, match=r"holds another model \(.*num_hidden_layers 6 != 4"):
        run(cfg)
    assert not Path(cfg.output_dir).exists()


def test_more_devices_than_the_node_can_start_are_refused(tiny_run, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    with pytest.raises(
        ConfigError, match=r"^trainer.devices: 8 requested but this node has 2 GPUs"
    ):
        run(tiny_run("trainer=fsdp", "trainer.devices=8"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # started by torchrun
    with pytest.raises(
        ConfigError,
        match=r"^trainer.devices: 2 processes per node requested but torchrun started 4",
    ):
        run(tiny_run(*FSDP))


# ---- slow: a 2 x 2 hybrid mesh on two "nodes", torch.compile inside FSDP -----------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_hybrid_sharding_on_a_2x2_mesh_trains_as_one_process(runs, tmp_path, data_dir):
    """Two nodes of two processes each (four processes on this machine, as two `srun` tasks
    would start them): shard inside a node, replicate across nodes."""
    out = tmp_path / "hsdp"
    args = cli(
        out,
        data_dir,
        *COMMON,
        *FSDP,
        "trainer.num_nodes=2",
        "trainer.strategy.shard_size=node",
        "trainer.max_steps=6",
        "data.micro_batch_size=2",  # 4 ranks x 2: the same global batch of 8
    )
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
    }
    nodes = [
        subprocess.Popen(
            args,
            cwd=REPO,
            env={**env, "NODE_RANK": str(rank)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    errors = [node.communicate(timeout=600)[1] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], errors[0][-2000:] + errors[1][-2000:]
    hsdp, one = summary(out), summary(runs["one"])
    assert hsdp["fsdp"]["mesh"] == {"replicate": 2, "shard": 2}
    assert hsdp["geometry"]["world_size"] == 4 and hsdp["geometry"]["accumulate"] == 1
    assert hsdp["tokens"] == one["tokens"]
    for domain, loss in one["final_val_loss"].items():
        assert hsdp["final_val_loss"][domain] == pytest.approx(loss, abs=2e-3)
    held, whole = hsdp["state_bytes_per_process"], one["state_bytes_per_process"]
    assert 0.45 < held["parameters"] / whole["parameters"] < 0.55  # 2 shards, not 4
    assert largest_difference(weights(out, 6), weights(runs["one"], 6)) < 1e-5


@pytest.mark.slow
def test_compiled_blocks_inside_fsdp_train_as_eager(runs, tmp_path, data_dir):
    out = tmp_path / "compiled"
    compiled = train(out, data_dir, *FSDP, "trainer.max_steps=6", "model.compile=true")
    assert "torch.compile failed" not in (out / "train.log").read_text()
    for domain, loss in summary(runs["fsdp2"])["final_val_loss"].items():
        assert compiled["final_val_loss"][domain] == pytest.approx(loss, abs=1e-4)


@pytest.mark.slow
def test_upstream_adam_moments_load_into_fsdp_shards(runs, tmp_path, data_dir):
    """`optimizer_state=load` from a sharded folder: 2 FSDP processes start from the upstream
    moments exactly as one process does (fresh moments would move the weights differently)."""
    upstream = runs["fsdp2"] / "checkpoints" / "step0000006.ckpt"
    start = (f"init=ckpt:{upstream}", "model=from_init", "callbacks.rewarm.optimizer_state=load")
    one = train(tmp_path / "one", data_dir, *start, "trainer.max_steps=3")
    two = train(tmp_path / "two", data_dir, *start, *FSDP, "trainer.max_steps=3")
    fresh = train(tmp_path / "fresh", data_dir, *start[:2], *FSDP, "trainer.max_steps=3")
    moved = largest_difference(weights(tmp_path / "two", 3), weights(tmp_path / "one", 3))
    assert moved < 1e-5
    assert largest_difference(weights(tmp_path / "fresh", 3), weights(tmp_path / "one", 3)) > 1e-4
    assert two["final_val_loss"] == pytest.approx(one["final_val_loss"], abs=1e-5)
    assert fresh["final_val_loss"] != pytest.approx(one["final_val_loss"], abs=1e-5)


@pytest.mark.slow
def test_weights_gathered_in_bf16_train_close_to_fp32(runs, tmp_path, data_dir):
    """FSDP2's mixed-precision policy (what `param_dtype=auto` picks on GPUs under bf16), here on
    CPU processes: bf16 gathers and compute, fp32 reduce-scatter and master weights."""
    out = tmp_path / "bf16"
    got = train(out, data_dir, *FSDP, "trainer.max_steps=6", "trainer.strategy.param_dtype=bf16")
    assert got["fsdp"]["param_dtype"] == "bfloat16" and got["fsdp"]["reduce_dtype"] == "fp32"
    fp32 = summary(runs["fsdp2"])["final_val_loss"]
    for domain, loss in fp32.items():
        assert got["final_val_loss"][domain] == pytest.approx(loss, abs=3e-2)
        assert got["final_val_loss"][domain] != pytest.approx(loss, abs=1e-6)  # bf16 did run
    master = weights(out, 6)
    assert all(v.dtype == torch.float32 for v in master.values())  # fp32 master weights


@pytest.mark.slow
def test_torchrun_ranks_train_as_one_process(runs, data_dir, tmp_path):
    """Ranks from torchrun's RANK/WORLD_SIZE: one run folder for both (Hydra's default, from
    torchrun's run id), the data prepared by rank 0, the numbers of one process."""
    command = cli(tmp_path, data_dir, *COMMON, "trainer.max_steps=6", "trainer.accelerator=cpu")
    command = [a for a in command if not a.startswith("hydra.run.dir=")]  # the default folder
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            *command[1:],
            "trainer.devices=2",
            "+trainer.strategy=ddp",
        ],
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    output = done.stdout + done.stderr
    assert output.count("rank 1 waited for global rank 0 to prepare the data") == 1
    (run,) = (tmp_path / "outputs" / "runs").iterdir()
    assert run.name.startswith("torchrun-")
    both, one = summary(run), summary(runs["one"])
    assert both["geometry"]["world_size"] == 2
    for domain, loss in one["final_val_loss"].items():
        assert both["final_val_loss"][domain] == pytest.approx(loss, abs=1e-4)
    assert largest_difference(weights(run, 6), weights(runs["one"], 6)) < 1e-5
