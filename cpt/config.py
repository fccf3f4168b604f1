"""The run's config: `TrainConfig` composes the components' own schemas, plus the resolvers.

Each group's dataclass belongs to the component built from it and checks itself
(`__post_init__`): `model` -> `cpt.models.options.ModelOptions`, `data` ->
`cpt.data.config.DataConfig` (its domains: `DomainSpec`, with a `QualityRule`), `optim` ->
`cpt.module.OptimConfig`, `schedule` -> `cpt.schedules.ScheduleSpec`. Hydra composes against them,
so a typo in a key fails at compose time; `validate` builds the typed config, and any component's
complaint comes out as one line naming the full key (`schedule.warmup: ...`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from cpt.analysis.dashboard import DashboardConfig
from cpt.data.config import DataConfig
from cpt.errors import UserError
from cpt.models.options import ModelOptions
from cpt.models.presets import preset_names
from cpt.module import OptimConfig
from cpt.results.naming import job_name, short_dirname
from cpt.run.geometry import BatchGeometry
from cpt.scale.launch import run_id
from cpt.schedules import ScheduleSpec


class ConfigError(UserError, ValueError):
    """A config value that is out of range or contradicts another."""


@dataclass
class TrainConfig:
    model: ModelOptions = field(default_factory=ModelOptions)
    data: DataConfig = MISSING  # no valid default: a config has at least one domain
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleSpec = field(default_factory=ScheduleSpec)
    trainer: dict[str, Any] = field(default_factory=dict)  # lightning.Trainer keyword arguments
    callbacks: dict[str, Any] = field(default_factory=dict)  # name -> {_target_: ..., ...}
    logger: dict[str, Any] = field(default_factory=dict)
    init: str = (
        "scratch"  # scratch | hf:<hub id or folder>[@revision] | ckpt:<lightning checkpoint>
    )
    resume: str | None = (
        None  # a checkpoint whose full state is restored; auto: newest in output_dir
    )
    overwrite: bool = False  # allow an output_dir that already holds a finished run
    skip_finished: bool = (
        False  # a finished output_dir (summary.json) is left as it is: resuming a grid
    )
    seed: int = 1234
    eval_before_fit: bool = True  # validate every domain at step 0 (the "before" of CPT)
    keep_freed_memory: bool = True  # on a CPU: glibc reuses freed blocks (cpt/scale/allocator.py)
    dashboard: DashboardConfig = field(default_factory=DashboardConfig)
    output_dir: str = MISSING

    def __post_init__(self) -> None:
        if self.seed < 0:
            raise ValueError(f"seed: expected a seed >= 0, got {self.seed}")
        init = self.init
        if init != "scratch" and not init.startswith(("hf:", "ckpt:")):
            raise ValueError(
                f"init: {init!r} not understood; expected scratch, hf:<hub id or folder> or "
                "ckpt:<path>"
            )
        if init == "scratch" and self.model.name is None:
            raise ValueError("model.name: a preset is needed when init=scratch (e.g. model=tiny)")
        if self.resume is not None and self.resume != "auto":
            if init != "scratch":
                raise ValueError(
                    f"resume: given together with init={init}: init loads weights only to start "
                    "continual pre-training, resume restores a full training state; use one"
                )
            if not Path(self.resume).expanduser().exists():
                raise ValueError(f"resume: {self.resume}: no such checkpoint file or folder")
        if init.startswith("ckpt:") and not Path(init.removeprefix("ckpt:")).expanduser().exists():
            raise ValueError(
                f"init: {init.removeprefix('ckpt:')}: no such checkpoint file or folder"
            )

    @property
    def geometry(self) -> BatchGeometry:
        """The run's one batch geometry (see `cpt.run.geometry`)."""
        return BatchGeometry.from_config(self.data, self.trainer)


def register() -> None:
    """The schema, one `model=<preset>` option per preset of `cpt.models.presets`, the resolvers."""
    store = ConfigStore.instance()
    store.store(name="train_schema", node=TrainConfig)
    for name in preset_names():  # the preset table is the one source: no conf/model/<preset>.yaml
        store.store(group="model", name=name, node={"name": name})
    if not OmegaConf.has_resolver("short_dirname"):
        OmegaConf.register_new_resolver("short_dirname", short_dirname)
    if not OmegaConf.has_resolver("job_name"):
        OmegaConf.register_new_resolver("job_name", job_name)
    if not OmegaConf.has_resolver("run_tokens"):
        OmegaConf.register_new_resolver("run_tokens", run_tokens)
    if not OmegaConf.has_resolver("run_id"):
        OmegaConf.register_new_resolver("run_id", run_id)


def validate(cfg: DictConfig) -> TrainConfig:
    """The typed config; raises ConfigError with one line naming the key of the first bad value."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(
            f"{missing[0]}: no value given (???); set it on the command line, e.g. {missing[0]}=..."
        )
    _finite(cfg, "")
    return _typed(cfg, "")


def _finite(node: Any, key: str) -> None:
    """No setting of a run takes infinity or NaN: every number a user sets is finite."""
    if isinstance(node, DictConfig):
        for name in node:
            if name != "hydra" and not OmegaConf.is_missing(node, name):
                _finite(node[name], f"{key}.{name}" if key else str(name))
    elif isinstance(node, ListConfig):
        for i, item in enumerate(node):
            _finite(item, f"{key}[{i}]")
    elif isinstance(node, float) and not math.isfinite(node):
        raise ConfigError(f"{key}: expected a finite number, got {node}")


def _typed(node: DictConfig, key: str) -> Any:
    """`node` as its dataclass, children first, so a nested component's error names its full key."""
    for name in node:
        child = node._get_node(name)
        if isinstance(child, DictConfig) and not child._is_none() and not child._is_missing():
            _typed(child, f"{key}.{name}" if key else str(name))
    if not is_dataclass(OmegaConf.get_type(node)):
        return None
    try:
        return OmegaConf.to_object(node)
    except ValueError as err:
        message = str(err).splitlines()[0]
        raise ConfigError(f"{key}.{message}" if key else message) from None


def run_tokens(fraction: float = 1.0, *, _root_: DictConfig) -> int:
    """`fraction` of the tokens the run trains on, from its batch geometry.

    `max_tokens: ${run_tokens:0.25}` caps a domain at a quarter of the run: four epochs of it.
    """
    try:
        geometry = BatchGeometry.from_config(_root_.data, _root_.trainer)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return max(1, int(geometry.total_tokens * fraction))
