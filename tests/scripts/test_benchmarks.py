"""The speed and memory options change nothing but speed and memory: chunked loss, attention
backends, activation checkpointing, torch.compile (and its fallback)."""

from __future__ import annotations

import pytest
import torch

from cpt.models.presets import config_from_name
from cpt.models.registry import build_model


@pytest.mark.parametrize(
    ("model", "seq", "batch", "loss"),
    [("pythia-70m", 512, 4, "chunked"), ("tiny", 128, 16, "chunked"), ("tiny", 100, 3, "plain")],
)
def test_the_benchmarks_matmul_ceiling_counts_the_flops_peak_fraction_counts(
    model, seq, batch, loss
):
    """`bench_train.py`'s `gemm_fraction` times the step's matmuls alone: exactly the 6 N + 12 L d T
    FLOPs per token that `peak_fraction` divides by, so the two fractions compare."""
    import argparse
    import importlib.util

    from cpt.callbacks.throughput import model_flops_per_token
    from cpt.models.presets import config_from_name
    from tests.helpers import REPO

    path = REPO / "scripts" / "bench_train.py"
    spec = importlib.util.spec_from_file_location("bench_train", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = argparse.Namespace(model=model, seq=seq, batch=batch, loss=loss)
    counted = sum(c * 2 * b * m * k * n for c, b, m, k, n in bench.step_matmuls(args))
    expected = model_flops_per_token(config_from_name(model), seq) * batch * seq
    assert counted == pytest.approx(expected, rel=1e-12)


def test_the_overhead_benchmarks_clock_counts_the_model_and_nothing_else():
    """`bench_overhead.py`'s `ModelClock`: a training step from its forward pass to its optimizer
    step, each forward pass without gradients of the whole model once (not its blocks'), and not
    the time between them."""
    import importlib.util
    import time

    from tests.helpers import REPO

    spec = importlib.util.spec_from_file_location(
        "bench_overhead", REPO / "scripts" / "bench_overhead.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    model = build_model(config_from_name("tiny"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.randint(0, model.config.vocab_size, (2, 17))
    started = time.perf_counter()
    with bench.ModelClock() as clock:
        for _ in range(2):
            model(ids[:, :-1], targets=ids[:, 1:])[0].backward()
            time.sleep(0.1)  # inside the step: between its backward and its optimizer step
            optimizer.step()
            optimizer.zero_grad()
            time.sleep(0.2)  # outside
        with torch.no_grad():
            for _ in range(3):
                model(ids)
                time.sleep(0.2)  # outside
    wall = time.perf_counter() - started
    with torch.no_grad():
        model(ids)  # the hooks are gone
    assert (clock.steps, clock.evaluations) == (2, 3)
    assert clock.training >= 0.2
    assert clock.evaluation > 0
    assert wall - clock.training - clock.evaluation >= 1.0


@pytest.mark.slow
def test_the_training_benchmark_runs_end_to_end(tmp_path):
    """`bench_train.py` on a small shape prints a case line per precision that parses (a renamed
    import once broke it before its first case without any test noticing)."""
    import subprocess
    import sys

    from tests.helpers import REPO

    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench_train.py"), "--model", "pythia-14m",
         "--seq", "32", "--batch", "1", "--steps", "1", "--peak-size", "256",
         "--peak-repeats", "1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("processor: ") and "cores; " in lines[0]  # where it ran
    assert lines[1].startswith("kernels: ATen ") and "bf16 matmul: " in lines[1]
    cases = [line for line in lines if line.startswith("case=")]
    assert [line.split()[0] for line in cases] == ["case=cpu-fp32", "case=cpu-bf16"]
    for line in cases:
        fields = dict(item.split("=") for item in line.split())
        assert float(fields["tokens_per_s"]) > 0 and 0 < float(fields["peak_fraction"]) < 2


@pytest.mark.slow
def test_the_step_profile_splits_a_step_by_phase_module_and_operator(tmp_path):
    """`bench_profile.py` prints, per precision, phases that add up to the step, forward time by
    module class, and the operators by self time with the matmul among them."""
    import re
    import subprocess
    import sys

    from tests.helpers import REPO

    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench_profile.py"), "--model", "pythia-14m",
         "--seq", "32", "--batch", "1", "--steps", "2", "--top", "8"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert out.startswith("processor: ")
    for precision in ("fp32", "bf16"):
        section = out.split(f"## ours, {precision},")[1].split("## ")[0]
        step = float(re.search(r"([\d.]+) ms a step\n", section).group(1))
        phases = re.search(r"by phase:\n(.*?)\n\n", section, re.S).group(1)
        shares = {
            row.split("|")[1].strip(): float(row.split("|")[2]) for row in phases.splitlines()[2:]
        }
        assert set(shares) == {"forward", "backward", "optimizer"}
        assert abs(sum(shares.values()) - step) < 0.2
        modules = section.split("by module (forward, inclusive):")[1].split("by operator")[0]
        assert "| Attention |" in modules and "| MLP |" in modules
        operators = section.split("by operator (self time):")[1]
        assert len([r for r in operators.splitlines() if r.startswith("| aten::")]) >= 5
        assert re.search(r"\| aten::(mm|addmm|bmm|matmul) \|", operators)
