"""A run's plan: what it will do, computed before it runs (`python -m cpt.plan` prints it).

`plan_run` builds the run's objects exactly as the run does
(`cpt.run.build.build`: the same geometry, the same `Rewarm` schedule, the same `Replay` fraction
schedule on the same `Mixture`), reads no data and loads no weights, and returns the batch geometry,
the schedule's phases with their steps, tokens and LRs, the tokens of every data source (per phase,
replay included), the model's FLOPs, the time and GPU-hours at an MFU, the memory per GPU, and the
problems visible already.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from cpt.callbacks import Replay, Rewarm
from cpt.checkpoints.retention import KeepCheckpoints
from cpt.config import ConfigError
from cpt.data.mixture import Mixture, MixtureSource
from cpt.run import estimates
from cpt.run.build import Built, build
from cpt.schedules import ScheduleSpec

FULL_CURVE_STEPS = 2000  # up to this many steps the plan lists the LR of every step


@dataclass
class PlanOptions:
    gpus: int | None = None  # GPUs for the time estimate (default: devices x nodes of the run)
    mfu: float = 0.4  # the model FLOPs utilisation to assume
    accelerator: str = "H100"  # H100 | H200 | A100: its dense bf16 peak and its memory
    peak_tflops: float | None = None  # instead of the accelerator's
    dir: str | None = None  # where plan.json and plan.png go (default outputs/plans/<date>/<time>)

    def __post_init__(self) -> None:
        if not 0 < self.mfu <= 1:
            raise ConfigError(f"plan.mfu: expected a fraction in (0, 1], got {self.mfu}")
        if self.gpus is not None and self.gpus < 1:
            raise ConfigError(f"plan.gpus: expected a positive count, got {self.gpus}")
        if self.peak_tflops is None:
            try:
                self.peak_tflops = estimates.peak_tflops_of(self.accelerator)
            except ValueError as err:
                raise ConfigError(str(err)) from None


def plan_run(cfg: DictConfig, options: PlanOptions, overrides: list[str]) -> dict[str, Any]:
    """Every number of one run's plan; raises a one-line error where the run would."""
    built = build(cfg, plan=True)
    config, geometry = built.config, built.geometry
    rewarm = next(c for c in built.callbacks if isinstance(c, Rewarm))
    steps, tps = geometry.max_steps, geometry.tokens_per_step
    mixture, replay = _mixture(built)
    spans = rewarm.phases()
    phases = []
    for name, start, end in spans:
        phases.append(
            {
                "name": name,
                "steps": end - start,
                "first_step": start,
                "last_step": end - 1 if end > start else None,
                "first_token": start * tps,
                "last_token": end * tps,
                "lr_first": rewarm.lr_at(start),
                "lr_last": rewarm.lr_at(max(end - 1, start)),
                "tokens_per_source": _tokens(mixture, start, end, geometry.seq_len),
            }
        )
    boundaries = {0, steps} | {step for _, start, end in spans for step in (start, end)}
    grid = range(steps + 1) if steps <= FULL_CURVE_STEPS else np.linspace(0, steps, 257).round()
    points = sorted(boundaries | {int(s) for s in grid} | {max(b - 1, 0) for b in boundaries})
    tokens = _tokens(mixture, 0, steps, geometry.seq_len)
    gpus = options.gpus or geometry.world_size
    cost = estimates.compute(built.initial.config, geometry, gpus, options.mfu, options.peak_tflops)
    memory = _memory(built)
    result = {
        "overrides": overrides,
        "geometry": geometry.to_dict(),
        "tokens_per_step": tps,
        "total_steps": steps,
        "total_tokens": geometry.total_tokens,
        "accumulation_by_devices": _accumulation_by_devices(config.data, geometry),
        "phases": phases,
        "lr": [[s, rewarm.lr_at(s)] for s in points],
        "replay_fraction": [[s, replay.fraction_at(s)] for s in points] if replay else None,
        "tokens_per_source": tokens,
        "epochs": _epochs(config, tokens),
        "parameters": built.initial.config.num_parameters(),
        **cost,
        "gpus": gpus,
        "mfu": options.mfu,
        "peak_tflops": options.peak_tflops,
        "memory_gib": memory,
        "checkpoints": _checkpoints(built),
    }
    result["problems"] = _problems(config.schedule, result, options)
    return result


def _mixture(built: Built) -> tuple[Mixture, Replay | None]:
    """The run's mixture of sources, with what its `Replay` callbacks make of the weights."""
    weights = dict(built.config.data.weights)
    replays = [c for c in built.callbacks if isinstance(c, Replay)]
    for replay in replays:  # as CPTDataModule.include_source: a replayed domain joins at weight 0
        weights.setdefault(replay.source, 0.0)  # a domain (checked by build)
    sources = [MixtureSource(name, weight, 1) for name, weight in weights.items()]
    mixture = Mixture(sources, built.geometry.global_batch, built.config.seed)
    for replay in replays:
        replay.bind(mixture.names, mixture.weights, built.geometry.max_steps)
        mixture.set_weight_schedule(replay.weights_at)
    return mixture, (replays[-1] if replays else None)


def _tokens(mixture: Mixture, start: int, end: int, seq_len: int) -> dict[str, int]:
    drawn = mixture.consumed(end) - mixture.consumed(start)
    return {name: int(n) * seq_len for name, n in zip(mixture.names, drawn)}


def _accumulation_by_devices(data: Any, geometry: Any) -> dict[int, int]:
    """With a fixed global batch: the accumulation on 1, 2, 4, ... devices (where it divides)."""
    if data.global_batch_size is None:
        return {geometry.world_size: geometry.accumulate}
    counts = [2**k for k in range(11)]
    per_device = data.global_batch_size // data.micro_batch_size
    return {
        n: per_device // n
        for n in counts
        if data.global_batch_size % (data.micro_batch_size * n) == 0
    }


def _epochs(config: Any, tokens: dict[str, int]) -> dict[str, float]:
    """How often the run passes over each source whose size is known without reading it."""
    epochs = {}
    for name, drawn in tokens.items():
        domain = config.data.domains[name]
        size = domain.max_tokens
        meta = Path(domain.source).expanduser() / "meta.json"
        if size is None and meta.is_file():
            size = json.loads(meta.read_text())["splits"]["train"]["tokens"]
        if size:
            epochs[name] = drawn / size
    return epochs


def _checkpoints(built: Built) -> dict[str, float] | None:
    """What the run's periodic checkpoints keep on disk (`KeepCheckpoints`), if it saves any."""
    keep = next((c for c in built.callbacks if isinstance(c, KeepCheckpoints)), None)
    if keep is None:
        return None
    return estimates.checkpoint_disk(
        built.initial.config,
        str(built.trainer_args.get("precision", "32-true")),
        built.geometry.max_steps,
        keep._every_n_train_steps,
        keep.keep_last,
        keep.keep_steps,
    )


def _memory(built: Built) -> dict[str, float]:
    trainer, model = built.trainer_args, built.config.model
    strategy = trainer.get("strategy")
    geometry = built.geometry
    shards = 1  # DDP or one device: every rank holds the whole state
    if hasattr(strategy, "mesh_shape"):  # FSDP2: the ranks of one shard group
        shards = strategy.mesh_shape(geometry.world_size, geometry.devices)[1]
    return estimates.memory_per_gpu(
        built.initial.config,
        geometry,
        precision=str(trainer.get("precision", "32-true")),
        shards=shards,
        activation_checkpointing=model.activation_checkpointing,
        fused_attention=model.attention in ("sdpa", "flash"),
        chunked_loss=model.loss == "chunked",
    )


def _problems(spec: ScheduleSpec, plan: dict[str, Any], options: PlanOptions) -> list[str]:
    """What is wrong or surprising already: phases that round away, sources seen many times,
    a micro batch that cannot fit."""
    found = []
    # the phases this schedule sets a length for (cosine's own "decay" is the rest of the run)
    lengths = {"infinite": ("warmup", "cooldown", "anneal"), "wsd": ("warmup", "decay")}
    for phase in plan["phases"]:
        key = phase["name"]
        if (
            key in lengths.get(spec.name, ("warmup",))
            and phase["steps"] == 0
            and getattr(spec, key)
        ):
            found.append(
                f"schedule.{key}: {getattr(spec, key)} rounds to 0 steps of "
                f"{plan['tokens_per_step']:,} tokens: no {phase['name']} phase"
            )
    cooldown = next((p for p in plan["phases"] if p["name"] == "cooldown"), None)
    if cooldown is not None and cooldown["steps"] == 0 and spec.constant_lr_ratio < 1:
        found.append(
            "schedule.cooldown: 0 steps: the LR drops from max_lr to "
            f"{spec.constant_lr_ratio} x max_lr at once"
        )
    for name, epochs in plan["epochs"].items():
        if epochs > 1:
            found.append(f"data.domains.{name}: the run draws {epochs:.1f} epochs of it")
    memory = estimates.memory_gb_of(options.accelerator)
    if memory and plan["memory_gib"]["total"] > memory:
        found.append(
            f"data.micro_batch_size: ~{plan['memory_gib']['total']:.0f} GiB per GPU, more than "
            f"the {options.accelerator}'s {memory:.0f}; use a smaller micro batch, "
            "model.activation_checkpointing=true or trainer=fsdp"
        )
    return found
