"""Per-step overhead of a real training run on the twins' shape (`tiny`, micro-batch 16, sequence
128, one process): the share of the run's wall time spent outside the model's forward, backward and
optimizer step, and outside its evaluation forward passes.

    python scripts/bench_overhead.py                 # 300 steps, as a twin runs
    python scripts/bench_overhead.py --cases twin-unmeasured,twin

Reference, in the same process: the bare step (forward, backward, fused AdamW on random ids of the
same shape) timed over the same number of steps, to compare with the model's step inside the run.
Then `cpt.train` runs (Lightning, data loading, the callbacks, logging) with more of a twin switched
on each time: `bare` (default callbacks, no
validation), `+monitor` (the stability-gap monitor on its default schedule), `+validation` (every 50 steps),
`+tasks` (the built-in next-line tasks in the loop, 9 times). `twin` is a twin as `make reproduce`
runs it (`experiment=gupta2023_rewarm_cpu` at warm-up 1 %, max LR 2e-3, seed 1, with the measuring
schedule of `conf/scale/cpu.yaml`); `twin-unmeasured` the same run with the measuring switched
off. The twin cases continue the twins' upstream model when
`outputs/twin-upstream` (or `$CPT_UPSTREAM`) holds it, else a random init of the same shape with a
tokenizer trained here (the cost is the same). The last lines are machine readable: `case=twin overhead_share=0.02 eval_forward_share=0.20 step_ms=...
model_step_ms=... bare_step_ms=...`, timed inside the run by hooks on the model and the optimizer
(`ModelClock`): `eval_forward_share` is the share of the run's wall time in the model's forward
passes without gradients (the monitor's, validation's and the tasks' evaluations), `model_step_ms`
a training step from its forward pass's start to its optimizer step's end, and `overhead_share = 1
- (training steps + evaluation forward passes) / wall time`: what the run spends outside the
model's forward and backward passes, training's and evaluation's (Lightning, data loading,
callbacks, logging, lm-eval's own work). With both twin cases,
`case=twin-measuring share=...`: 1 - the unmeasured twin's wall time / the twin's (the measuring
alone, against the same run, which the shared machine's drift moves less than the bare step).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

UNMEASURED = ["callbacks=default", "trainer.val_check_interval=100000", "eval_before_fit=false"]
TWIN = ["experiment=gupta2023_rewarm_cpu", "schedule.warmup=0.01", "seed=1"]
CASES = {
    "twin-unmeasured": [*TWIN, *UNMEASURED],
    "twin": TWIN,
    "bare": ["callbacks=default", "trainer.val_check_interval=100000", "eval_before_fit=false"],
    "+monitor": ["callbacks=gap", "trainer.val_check_interval=100000", "eval_before_fit=false"],
    "+validation": ["callbacks=gap", "trainer.val_check_interval=50"],
    "+tasks": [
        "callbacks=[gap,task_eval]",
        "trainer.val_check_interval=50",
        "callbacks.task_eval.tasks=[next_line_downstream,next_line_upstream]",
        "callbacks.task_eval.dense=[[20,5]]",
        "callbacks.task_eval.every=100",
        "callbacks.task_eval.at_validation=false",
    ],
}


def bare_step_seconds(steps: int, batch: int, seq: int) -> float:
    """The median time of forward, backward and the optimizer step, nothing else."""
    import torch

    from cpt.models.presets import config_from_name
    from cpt.models.registry import build_model

    torch.manual_seed(0)
    model = build_model(config_from_name("tiny")).train()
    model.set_loss("chunked")  # as cpt.train runs it (model.loss's default)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    times = []
    for step in range(steps + 3):
        ids = torch.randint(0, model.config.vocab_size, (batch, seq + 1))
        start = time.perf_counter()
        loss = model(ids[:, :-1], targets=ids[:, 1:])[0]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= 3:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def twin_init() -> list[str]:
    """The twins continue the upstream run; without it, a random init of the same shape."""
    from cpt.reproduce.twins import UPSTREAM_RUN as upstream  # $CPT_UPSTREAM or the default

    if (upstream / "checkpoints" / "last.ckpt").is_file():
        return [
            f"init=ckpt:{upstream}/checkpoints/last.ckpt",
            f"data.tokenizer={upstream}/tokenizer.json",
        ]
    print(f"no upstream run in {upstream}: the twin cases start from a random init", flush=True)
    return ["init=random", "data.tokenizer=bpe:4096"]


class ModelClock:
    """The seconds a run spends in the model, timed inside the run (the shared machine's drift
    moves them with the wall time): `training`, from each training forward pass's start to its
    optimizer step's end (forward, backward, gradient clipping, AdamW); `evaluation`, in the
    forward passes without gradients (the monitor's, validation's and the tasks'). Global forward
    hooks that act on the whole model alone (`CausalLM`) and a global optimizer-step hook: a few
    microseconds a call."""

    def __init__(self) -> None:
        self.training = self.evaluation = 0.0
        self.steps = self.evaluations = 0
        self._forward = self._step = None

    def __enter__(self) -> ModelClock:
        import torch
        from torch.nn.modules.module import (
            register_module_forward_hook,
            register_module_forward_pre_hook,
        )
        from torch.optim.optimizer import register_optimizer_step_post_hook

        from cpt.models.base import CausalLM

        def before(module, args):
            if isinstance(module, CausalLM):
                now = time.perf_counter()
                if torch.is_grad_enabled():
                    self._step = self._step or now  # the first micro-batch's forward
                else:
                    self._forward = now

        def after(module, args, output):
            if isinstance(module, CausalLM) and not torch.is_grad_enabled():
                self.evaluation += time.perf_counter() - self._forward
                self.evaluations += 1

        def stepped(optimizer, args, kwargs):
            if self._step is not None:
                self.training += time.perf_counter() - self._step
                self.steps += 1
            self._step = None

        self._handles = [
            register_module_forward_pre_hook(before),
            register_module_forward_hook(after),
            register_optimizer_step_post_hook(stepped),
        ]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()


def run_seconds(overrides: list[str], steps: int, data_dir: str) -> tuple[float, ModelClock]:
    """The wall time of `cpt.train` for `steps` steps (the summary's `wall_time_s`) and the
    seconds of it in the model."""
    if any(o.startswith("experiment=") for o in overrides):
        overrides = [*overrides, *twin_init()]
    else:
        overrides = ["experiment=demo_pretrain", *overrides]
    from hydra import compose, initialize_config_dir

    from cpt.train import run

    with (
        tempfile.TemporaryDirectory() as out,
        initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"),
        ModelClock() as clock,
    ):
        cfg = compose(
            "train",
            overrides=[
                "logger=csv",
                f"data.dir={data_dir}",
                f"trainer.max_steps={steps}",
                "trainer.enable_progress_bar=false",
                f"output_dir={out}/run",
                *overrides,
            ],
        )
        summary = run(cfg)
    return float(summary["wall_time_s"]), clock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--data-dir", default="data", help="the prepared built-in corpora")
    parser.add_argument("--cases", default=",".join(CASES))  # names, comma-separated
    args = parser.parse_args()
    import logging

    logging.getLogger("lightning").setLevel(logging.ERROR)
    bare = bare_step_seconds(args.steps, 16, 128)
    lines, walls = [], {}
    for case in args.cases.split(","):
        wall, clock = run_seconds(CASES[case], args.steps, args.data_dir)
        walls[case] = wall
        step = clock.training / max(clock.steps, 1)
        outside = 1 - (clock.training + clock.evaluation) / wall
        print(
            f"{case:16s} {wall:6.1f} s for {args.steps} steps ({wall / args.steps * 1000:.1f} ms a "
            f"step; the model's step {step * 1000:.1f} ms in the run, {bare * 1000:.1f} bare): "
            f"training {clock.training / wall:.1%}, evaluation forward passes "
            f"{clock.evaluation / wall:.1%}, outside the model {outside:.1%}",
            flush=True,
        )
        lines.append(
            f"case={case} overhead_share={outside:.3f} "
            f"eval_forward_share={clock.evaluation / wall:.3f} step_ms={wall / args.steps * 1000:.1f} "
            f"model_step_ms={step * 1000:.1f} bare_step_ms={bare * 1000:.1f}"
        )
    if {"twin", "twin-unmeasured"} <= set(walls):  # the measuring alone, the same run without it
        measuring = 1 - walls["twin-unmeasured"] / walls["twin"]
        print(
            f"the twin's measuring (monitor, validation, tasks): {measuring:.1%} of its wall time"
        )
        lines.append(f"case=twin-measuring share={measuring:.3f}")
    print()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
