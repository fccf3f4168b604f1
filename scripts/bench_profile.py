"""Where a training step's time goes: the PyTorch profiler over a few steps of cpt's model (or of
`transformers`' for comparison), the same step `scripts/bench_train.py` times.

    python scripts/bench_profile.py                         # fp32 and bf16, cpt's model
    python scripts/bench_profile.py --side hf --precisions bf16 --top 20

Per precision it prints the processor and kernels lines, then three tables per step (milliseconds,
averaged over `--steps` profiled steps after `--warmup` untimed ones):

- by phase: forward (the loss included), backward, optimizer step;
- by module, forward only: each module class's inclusive time (a block holds its attention and
  MLP, so the rows overlap; backward is not attributed to modules by the profiler);
- by operator: the `--top` ATen operators by self time over the whole step, with their share.

Read it to see what is not a matmul: on a processor whose matrix units make matmuls cheap, the
softmax, norms, GELU, casts and the optimizer's elementwise work hold more of the step.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
from pathlib import Path
from typing import Any


@functools.cache
def _bench_train() -> Any:
    """`scripts/bench_train.py` as a module: the benchmark's model and step, profiled here."""
    spec = importlib.util.spec_from_file_location(
        "bench_train", Path(__file__).with_name("bench_train.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CONTAINERS = {"ModuleList", "Sequential", "ModuleDict"}


def module_ranges(model: Any) -> None:
    """A profiler range per module call, named `module: <class>` (forward only)."""
    import torch

    open_ranges: list[Any] = []

    def enter(module: Any, _inputs: Any) -> None:
        scope = torch.profiler.record_function(f"module: {type(module).__name__}")
        scope.__enter__()
        open_ranges.append(scope)

    def leave(_module: Any, _inputs: Any, _output: Any) -> None:
        open_ranges.pop().__exit__(None, None, None)

    for module in model.modules():
        if type(module).__name__ not in CONTAINERS:
            module.register_forward_pre_hook(enter)
            module.register_forward_hook(leave)


def profile(args: argparse.Namespace, precision: str) -> dict[str, list[tuple[str, float, int]]]:
    """Per table, (name, milliseconds per step, calls per step) rows, largest first."""
    import torch
    from torch.profiler import ProfilerActivity, record_function

    args.precision = precision
    side = _bench_train().Side(
        args, args.side, args.attention if args.side == "ours" else args.hf_attention
    )
    module_ranges(side.model)
    for _ in range(args.warmup):
        side.step()
    ids = torch.randint(0, side.config.vocab_size, side.shape, generator=side.generator)
    with torch.profiler.profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            with record_function("phase: forward"), side.autocast():
                loss = side.loss_of(ids)
            with record_function("phase: backward"):
                loss.backward()
            with record_function("phase: optimizer"):
                side.optimizer.step()
                side.optimizer.zero_grad(set_to_none=True)
    events = prof.key_averages()
    per_step = 1e3 * args.steps  # profiler times are in microseconds

    def rows(prefix: str, inclusive: bool) -> list[tuple[str, float, int]]:
        """The events named `<prefix>...` (our ranges), or with no prefix the operators."""
        ours = ("phase: ", "module: ")
        chosen = [
            (
                e.key.removeprefix(prefix),
                (e.cpu_time_total if inclusive else e.self_cpu_time_total) / per_step,
                e.count // args.steps,
            )
            for e in events
            if (e.key.startswith(prefix) if prefix else not e.key.startswith(ours))
        ]
        return sorted(chosen, key=lambda row: -row[1])

    return {
        "phase": rows("phase: ", inclusive=True),
        "module (forward, inclusive)": rows("module: ", inclusive=True),
        "operator (self time)": rows("", inclusive=False)[: args.top],
    }


def main() -> None:
    from cpt.scale.hardware import cpu_kernels, processor

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", default="ours", choices=["ours", "hf"])
    parser.add_argument("--steps", type=int, default=3, help="profiled steps")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--top", type=int, default=15, help="operators listed")
    _bench_train().step_options(parser)
    args = parser.parse_args()
    args.device = "cpu"
    print(f"processor: {processor()}")
    print(f"kernels: {cpu_kernels()}")
    for precision in args.precisions.split(","):
        tables = profile(args, precision)
        step = sum(ms for _, ms, _ in tables["phase"])
        print(f"\n## {args.side}, {precision}, {args.model} seq {args.seq} batch {args.batch}: ")
        print(f"{step:.1f} ms a step")
        for title, rows in tables.items():
            print(f"\nby {title}:\n| name | ms a step | share | calls a step |\n|---|---|---|---|")
            for name, ms, calls in rows:
                print(f"| {name} | {ms:.1f} | {ms / step:.1%} | {calls} |")


if __name__ == "__main__":
    main()
