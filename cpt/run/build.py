"""Build once, before anything is written: every object of a run that needs no data.

`build(cfg)` types and checks the config (each component's own schema), computes the one
`BatchGeometry`, checks the machine, instantiates the callbacks (each checks itself against the
geometry: the `Rewarm` callback builds the very schedule the run will use), the strategy and the
starting model. `cpt.train.run` then trains with these objects; nothing is built twice.

On the command line the `Preflight` Hydra callback runs `build` on the config Hydra composed,
before Hydra creates the run folder: bad input is one line on stderr, exit status 2, no files.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback as HydraCallback
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, open_dict, read_write

from cpt.callbacks import Replay, Rewarm
from cpt.callbacks.base import RunPart
from cpt.checkpoints.files import datamodule_state
from cpt.config import ConfigError, TrainConfig, validate
from cpt.errors import UserError, exit_with, one_line
from cpt.models.hf import CheckpointError
from cpt.run.geometry import BatchGeometry
from cpt.run.initial import InitialModel, architecture, check_resumable, initial_model
from cpt.scale.hardware import check_hardware
from cpt.scale.precision import PRECISIONS


@dataclass
class Built:
    """Everything `build` made; the run uses exactly these objects."""

    config: TrainConfig
    geometry: BatchGeometry
    callbacks: list[Any]
    trainer_args: dict[str, Any]  # lightning.Trainer keyword arguments, strategy instantiated
    initial: InitialModel
    resume: str | None  # the checkpoint to resume (resume=auto resolved), or None
    seen: dict[str, dict[str, Any]]  # domain -> the datamodule state of its `seen_by` run


def build(cfg: DictConfig, *, plan: bool = False) -> Built:
    """Every check and object that needs no data; a bad input raises a `UserError`.

    `plan=True` (for `cpt.plan`) leaves out what concerns this machine and this moment rather than
    the config (the hardware, the output folder, reading seen-by checkpoints) and takes the
    starting model's architecture without its weights.
    """
    config = validate(cfg)
    geometry = _keyed(lambda: config.geometry)
    if not plan:
        _keyed(lambda: check_hardware(config.model, cfg.trainer))
    for name, domain in config.data.domains.items():
        _keyed(domain.check_readable, f"data.domains.{name}.")
    out = Path(config.output_dir)
    resume = None if plan else resolve_resume(config.resume, out)
    if not plan and (out / "summary.json").is_file() and resume is None and not config.overwrite:
        raise ConfigError(
            f"output_dir: {out} already holds a finished run (summary.json); "
            "choose another folder, resume=auto, or overwrite=true"
        )
    callbacks = build_callbacks(cfg.callbacks, geometry)
    check_targets(cfg.logger, "logger")  # instantiated only in the run: they write files
    for replay in (c for c in callbacks if isinstance(c, Replay)):
        check_replay(replay, config.data)
    trainer_args = trainer_arguments(cfg.trainer, geometry)
    # a resume then restores all state; a plan needs the architecture only
    initial = (architecture if plan else initial_model)(config.init, config.model.name)
    if resume is not None:
        try:
            check_resumable(resume, initial.config)
        except CheckpointError as err:
            raise ConfigError(f"resume: {err}") from None
    if config.data.seq_len > initial.config.max_position_embeddings:
        raise ConfigError(
            f"data.seq_len: {config.data.seq_len} exceeds the model's "
            f"max_position_embeddings {initial.config.max_position_embeddings}"
        )
    seen = {
        name: datamodule_state(domain.seen_by)
        for name, domain in config.data.domains.items()
        if domain.seen_by is not None and not plan
    }
    return Built(config, geometry, callbacks, trainer_args, initial, resume, seen)


def check_targets(group: DictConfig, key: str) -> None:
    """Every `_target_` of a group names something importable (found, not called)."""
    for name, entry in group.items():
        if entry and "_target_" in entry:
            try:
                get_object(entry["_target_"])
            except Exception:  # noqa: BLE001 (Hydra's ImportError or its own wrapping)
                raise ConfigError(
                    f"{key}.{name}._target_: {entry['_target_']!r} cannot be imported; expected "
                    "a class or function path"
                ) from None


def check_replay(replay: Replay, data: Any) -> None:
    """The replayed source is a domain, and not the only one the run trains on (replay draws its
    fraction from another domain than the trained ones)."""
    if replay.source not in data.domains:
        raise ConfigError(
            f"callbacks.replay.source: {replay.source!r} is not a domain; "
            f"expected one of {list(data.domains)}"
        )
    if not [name for name, weight in data.weights.items() if name != replay.source and weight > 0]:
        raise ConfigError(
            f"callbacks.replay.source: {replay.source} is the only domain the run trains on "
            "(data.train / data.mixture); expected another domain to replay, e.g. "
            "data.train=downstream callbacks.replay.source=upstream"
        )


def _keyed(make: Any, prefix: str = "") -> Any:
    """Run `make()`; a ValueError('key: message') becomes a ConfigError('<prefix>key: message')."""
    try:
        return make()
    except ValueError as err:
        raise ConfigError(f"{prefix}{err}") from None


def resolve_resume(resume: str | None, out: Path) -> str | None:
    """`auto`: the newest checkpoint in `out/checkpoints` (None when there is none yet)."""
    if resume != "auto":
        return resume
    # checkpoints are written atomically (temporary file or folder, then rename): any *.ckpt,
    # a file or a sharded folder, is complete
    candidates = list((out / "checkpoints").glob("*.ckpt"))
    candidates.sort(key=lambda p: p.stat().st_mtime)
    return str(candidates[-1]) if candidates else None


def build_callbacks(group: DictConfig, geometry: BatchGeometry) -> list[Any]:
    """The callbacks, each checked against the geometry (`check`, the callback protocol)."""
    check_targets(group, "callbacks")
    callbacks = instantiate_all(group, "callbacks")
    if sum(isinstance(c, Rewarm) for c in callbacks) != 1:
        raise ConfigError(
            "callbacks: expected exactly one Rewarm entry (it sets the learning rate)"
        )
    for callback in callbacks:
        if isinstance(callback, RunPart):
            _keyed(lambda c=callback: c.check(geometry))
    return callbacks


def instantiate_all(group: DictConfig, key: str) -> list[Any]:
    """Every entry of a callbacks/logger dict that has a `_target_`, in config order."""
    return [instantiated(entry, key) for entry in group.values() if entry and "_target_" in entry]


def instantiated(entry: DictConfig, key: str) -> Any:
    """`hydra.utils.instantiate(entry)`; a constructor's complaint (a ValueError) becomes one
    ConfigError naming `key`."""
    try:
        return instantiate(entry)
    except Exception as err:
        cause = err.__cause__ if isinstance(err.__cause__, ValueError) else err
        raise ConfigError(f"{key}: {one_line(cause)}") from None


# Lightning's accelerator names
ACCELERATOR_NAMES = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")


def _count(low: int) -> Any:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low


def _fraction(v: Any) -> bool:
    return isinstance(v, float) and 0.0 < v <= 1.0


# the numbers a user types into `trainer.*` (Lightning would refuse some only after files exist)
TRAINER_VALUES = {
    "val_check_interval": (
        lambda v: _count(1)(v) or _fraction(v),
        "a batch count >= 1 or a fraction in (0, 1]",
    ),
    "check_val_every_n_epoch": (lambda v: v is None or _count(1)(v), "a count >= 1 or null"),
    "limit_val_batches": (
        lambda v: v is None or _count(0)(v) or _fraction(v),
        "a batch count or a fraction in (0, 1]",
    ),
    "log_every_n_steps": (_count(1), "a step count >= 1"),
    "num_sanity_val_steps": (_count(-1), "-1 (all) or a count >= 0"),
    "gradient_clip_val": (
        lambda v: v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0),
        "a value >= 0 or null",
    ),
    "precision": (lambda v: str(v) in PRECISIONS, f"one of {list(PRECISIONS)}"),
    "accelerator": (lambda v: str(v) in ACCELERATOR_NAMES, f"one of {list(ACCELERATOR_NAMES)}"),
}


def check_trainer_values(trainer: DictConfig) -> None:
    for key, (valid, expected) in TRAINER_VALUES.items():
        if key in trainer and not valid(trainer[key]):
            raise ConfigError(f"trainer.{key}: expected {expected}, got {trainer[key]!r}")


def trainer_arguments(trainer: DictConfig, geometry: BatchGeometry) -> dict[str, Any]:
    """`lightning.Trainer` keyword arguments: the strategy instantiated, the accumulation and the
    steps from the geometry (so `data.global_batch_size` or `trainer.max_tokens` and the trainer
    cannot disagree)."""
    check_trainer_values(trainer)
    args = dict(trainer)
    strategy = args.get("strategy")
    if isinstance(strategy, DictConfig) and "_target_" in strategy:
        args["strategy"] = instantiated(strategy, "trainer.strategy")
        if isinstance(args["strategy"], RunPart):  # the callback protocol, for the strategy
            _keyed(lambda: args["strategy"].check(geometry), "trainer.strategy.")
    args["accumulate_grad_batches"] = geometry.accumulate
    args["max_steps"] = geometry.max_steps  # also when the config gave trainer.max_tokens
    args.pop("max_tokens", None)
    return args


# ---- the command line: build on the config Hydra composed, before it writes anything ----------
_BUILT: dict[str, Built] = {}


def take(output_dir: str) -> Built | None:
    """What `Preflight` built for the run writing to `output_dir` (once)."""
    return _BUILT.pop(os.path.abspath(output_dir), None)


class Preflight(HydraCallback):
    """Hydra calls `on_run_start` with the composed config before it creates the run folder, and
    `on_multirun_start` in the launching process before it submits any job."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from cpt.scale.submit import check_grid

        try:
            check_grid(config)
        except UserError as err:
            exit_with(err)  # nothing submitted

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        run_dir = os.path.abspath(str(config.hydra.run.dir))
        with read_write(config.hydra):
            config.hydra.run.dir = run_dir  # `${now:...}` resolved once: the folder we checked
        cfg = copy.deepcopy(config)
        with read_write(cfg), open_dict(cfg):
            del cfg["hydra"]
            cfg.output_dir = run_dir
        if finished_and_skipped(cfg):
            return  # the entry point returns at once
        try:
            _BUILT[run_dir] = build(cfg)
        except UserError as err:  # Hydra would turn an exception here into a warning
            exit_with(err)  # before Hydra writes anything


def finished_and_skipped(cfg: DictConfig) -> bool:
    """`skip_finished=true` and the output folder holds a finished run (not one resumed from a
    named checkpoint): launching a grid again, with `resume=auto`, finishes only what did not."""
    done = Path(str(cfg.output_dir)) / "summary.json"
    return bool(cfg.get("skip_finished")) and cfg.get("resume") in (None, "auto") and done.is_file()
