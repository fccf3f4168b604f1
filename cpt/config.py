"""Config schemas (dataclasses in Hydra's ConfigStore) and the checks a type cannot express.

The schema makes a typo in a key or a wrongly typed value fail when Hydra composes the config;
`validate` then checks ranges and combinations, so bad input stops with one line naming the key
before any data is prepared or any output is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from cpt.data.shards import is_prepared
from cpt.data.sources import SourceError, SourceSpec, check_source
from cpt.models.attention import BACKENDS, flash_available
from cpt.models.presets import preset_names
from cpt.quality import QualityRule
from cpt.schedules import SCHEDULES, ScheduleSpec, build


class ConfigError(ValueError):
    """A config value that is out of range or contradicts another."""


@dataclass
class ModelConfig:
    name: Optional[str] = None  # a preset; None takes the architecture of the `init` checkpoint
    attention: str = "sdpa"  # sdpa | flash (CUDA, flash-attn) | eager (the reference)
    loss: str = "chunked"  # chunked: no [tokens, vocab] logits kept | plain: the reference
    activation_checkpointing: bool = False  # recompute block activations in backward
    compile: bool = False  # torch.compile every block (falls back to eager if Inductor fails)


@dataclass
class QualityConfig:
    """Train on the windows a reference model finds best (cpt/quality.py)."""

    keep: Optional[float] = None  # fraction of the scored windows kept (None: no selection)
    reference: str = "init"  # init (the run's starting model) | ckpt:<path> | hf:<id>
    prefer: str = "low"  # low | high reference loss
    pool_tokens: Optional[int] = None  # score a seeded subset of this many tokens (None: all)


@dataclass
class DomainConfig:
    source: str = MISSING  # python-docs | python-code | files (path or glob) | hf:<dataset> | a prepared folder
    text_field: str = "text"
    hf_config: Optional[str] = None  # for hf: sources
    split: str = "train"  # for hf: sources
    streaming: bool = False  # for hf: sources too large to download whole
    max_docs: Optional[int] = None  # use only the first documents of the source
    val_tokens: int = 32768  # held-out documents, fixed across runs
    max_tokens: Optional[int] = None  # train on a fixed seeded subset of this many tokens (epochs)
    seen_by: Optional[str] = None  # a checkpoint: replay only the windows that run trained on
    quality: QualityConfig = field(default_factory=QualityConfig)  # keep: train on the best


@dataclass
class DataConfig:
    dir: str = "data"  # prepared token files and trained tokenizers are cached here
    tokenizer: str = MISSING  # a tokenizer.json path, a hub id, or bpe:<vocab> trained here
    train: Optional[str] = None  # shorthand for mixture {train: 1.0}; every domain is validated
    mixture: Any = None  # {domain: weight}: training weights, e.g. replay (checked in validate)
    domains: dict[str, DomainConfig] = field(default_factory=dict)
    seq_len: int = 128
    micro_batch_size: int = 16
    global_batch_size: Optional[int] = None  # set: accumulate = global / (micro x devices), exactly
    num_workers: int = 0  # dataloader workers
    prepare_workers: int = 2  # tokenization processes
    shard_tokens: int = 268435456  # tokens per shard file (512 MB of uint16)
    document_aware: bool = False  # attention and positions restart at each document


@dataclass
class OptimConfig:
    max_lr: float = 3e-4
    weight_decay: float = 0.1
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    on_nonfinite: str = (
        "stop"  # stop (save the last good state, fail) | skip (count and skip the step)
    )


@dataclass
class ScheduleConfig:
    """See cpt.schedules for the formulas. Phase lengths: int = steps, float in [0, 1) = fraction."""

    name: str = "cosine"  # constant | cosine | linear | inverse_sqrt | infinite | wsd
    warmup: Union[int, float] = 0.01
    min_lr_ratio: float = 0.1
    timescale: float = 10.0
    constant_lr_ratio: float = 0.55
    cooldown: Union[int, float] = 0.59
    cooldown_shape: str = "cosine"
    anneal: Union[int, float] = 0.15
    decay: Union[int, float] = 0.2
    decay_shape: str = "1-sqrt"
    unit: str = "steps"  # steps | tokens (integer lengths and timescale count tokens)


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    trainer: dict[str, Any] = field(default_factory=dict)
    callbacks: dict[str, Any] = field(default_factory=dict)
    logger: dict[str, Any] = field(default_factory=dict)
    init: str = (
        "scratch"  # scratch | hf:<hub id or folder>[@revision] | ckpt:<lightning checkpoint>
    )
    resume: Optional[str] = (
        None  # a checkpoint whose full state is restored; auto: newest in output_dir
    )
    overwrite: bool = False  # allow an output_dir that already holds a finished run
    seed: int = 1234
    eval_before_fit: bool = True  # validate every domain at step 0 (the "before" of CPT)
    output_dir: str = MISSING


def register() -> None:
    ConfigStore.instance().store(name="train_schema", node=TrainConfig)
    if not OmegaConf.has_resolver("short_dirname"):
        OmegaConf.register_new_resolver("short_dirname", short_dirname)
    if not OmegaConf.has_resolver("run_tokens"):
        OmegaConf.register_new_resolver("run_tokens", run_tokens)


def run_tokens(
    steps: int, seq_len: int, global_batch: int | None, micro_batch: int, fraction: float = 1.0
) -> int:
    """`fraction` of the tokens a run trains on (one device when no global batch is set).

    `max_tokens: ${run_tokens:${trainer.max_steps},${data.seq_len},${data.global_batch_size},
    ${data.micro_batch_size},0.25}` caps a domain at a quarter of the run: four epochs of it.
    """
    return max(1, int(steps * seq_len * (global_batch or micro_batch) * fraction))


def short_dirname(override_dirname: str, limit: int = 120) -> str:
    """A job folder name from its overrides: last key component only, at most `limit` characters.

    `optim.max_lr=0.0003,callbacks.replay.fraction=0.05` -> `max_lr=0.0003,fraction=0.05`; a longer
    name is cut and ends with a hash of the whole, so two jobs never share a folder.
    """
    parts = []
    for item in override_dirname.split(","):
        key, sep, value = item.partition("=")
        parts.append(f"{key.rsplit('.', 1)[-1]}{sep}{value}" if sep else item)
    name = ",".join(parts).replace("/", "-").replace("\\", "")
    if len(name) <= limit:
        return name
    import hashlib

    return f"{name[: limit - 9]}~{hashlib.sha1(override_dirname.encode()).hexdigest()[:8]}"


def _fail(key: str, message: str) -> None:
    raise ConfigError(f"{key}: {message}")


def _split_key(prefix: str, message: str) -> tuple[str, str]:
    """'warmup: 10 steps ...' -> ('schedule.warmup', '10 steps ...')."""
    key, _, rest = message.partition(": ")
    return f"{prefix}.{key}", rest


def validate(cfg: DictConfig) -> None:
    """Range and combination checks; raises ConfigError with one line naming the key."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        _fail(
            missing[0], f"no value given (???); set it on the command line, e.g. {missing[0]}=..."
        )
    if cfg.model.name is not None and cfg.model.name not in preset_names():
        _fail("model.name", f"unknown preset {cfg.model.name!r}; expected one of {preset_names()}")
    if cfg.model.attention not in BACKENDS:
        _fail(
            "model.attention", f"{cfg.model.attention!r} unknown; expected one of {list(BACKENDS)}"
        )
    if cfg.model.loss not in ("chunked", "plain"):
        _fail("model.loss", f"{cfg.model.loss!r} unknown; expected chunked or plain")
    _validate_init(cfg)
    max_steps = cfg.trainer.get("max_steps", -1)
    if not isinstance(max_steps, int) or max_steps <= 0:
        _fail("trainer.max_steps", f"expected a positive step count, got {max_steps}")
    if cfg.optim.on_nonfinite not in ("stop", "skip"):
        _fail("optim.on_nonfinite", f"expected stop or skip, got {cfg.optim.on_nonfinite!r}")
    if cfg.optim.max_lr <= 0:
        _fail("optim.max_lr", f"expected a positive learning rate, got {cfg.optim.max_lr}")
    if cfg.schedule.name not in SCHEDULES:
        _fail(
            "schedule.name",
            f"unknown schedule {cfg.schedule.name!r}; expected one of {list(SCHEDULES)}",
        )
    if not 0.0 <= cfg.schedule.min_lr_ratio <= 1.0:
        _fail(
            "schedule.min_lr_ratio", f"expected a value in [0, 1], got {cfg.schedule.min_lr_ratio}"
        )
    try:
        spec = ScheduleSpec(**OmegaConf.to_container(cfg.schedule, resolve=True))
        devices = cfg.trainer.get("devices", 1)
        tokens_per_step = (
            cfg.data.micro_batch_size
            * cfg.data.seq_len
            * cfg.trainer.get("accumulate_grad_batches", 1)
            * (devices if isinstance(devices, int) and devices > 0 else 1)
        )
        build(spec, max_lr=cfg.optim.max_lr, total_steps=max_steps, tokens_per_step=tokens_per_step)
    except ValueError as err:
        _fail(*_split_key("schedule", str(err)))
    _validate_data(cfg.data)
    _validate_hardware(cfg)


def _validate_init(cfg: DictConfig) -> None:
    init = cfg.init
    if init != "scratch" and not init.startswith(("hf:", "ckpt:")):
        _fail(
            "init",
            f"{init!r} not understood; expected scratch, hf:<hub id or folder> or ckpt:<path>",
        )
    if init == "scratch" and cfg.model.name is None:
        _fail("model.name", "a preset is needed when init=scratch (e.g. model=tiny)")
    if cfg.resume is not None and cfg.resume != "auto":
        if init != "scratch":
            _fail(
                "resume",
                f"given together with init={init}: init loads weights only to start continual "
                "pre-training, resume restores a full training state; use one",
            )
        if not Path(cfg.resume).is_file():
            _fail("resume", f"{cfg.resume}: no such checkpoint file")
    if init.startswith("ckpt:") and not Path(init.removeprefix("ckpt:")).expanduser().is_file():
        _fail("init", f"{init.removeprefix('ckpt:')}: no such checkpoint file")


def devices_of(trainer: DictConfig) -> int | None:
    """The number of processes a trainer config asks for, when it is a plain count."""
    devices = trainer.get("devices", 1)
    return devices if isinstance(devices, int) and devices > 0 else None


def _validate_hardware(cfg: DictConfig) -> None:
    import torch

    precision = str(cfg.trainer.get("precision", "32-true"))
    accelerator = cfg.trainer.get("accelerator", "auto")
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        _fail("trainer.accelerator", f"{accelerator} requested but no CUDA device is available")
    if precision.startswith("bf16") and on_gpu and not torch.cuda.is_bf16_supported():
        _fail(
            "trainer.precision",
            f"{precision} requested but this GPU has no bf16 support; use 16-mixed",
        )
    strategy = cfg.trainer.get("strategy")
    fsdp = "fsdp" in str(strategy.get("_target_") if isinstance(strategy, DictConfig) else strategy)
    if fsdp and not (on_gpu and torch.cuda.is_available()):
        _fail(
            "trainer.strategy",
            "FSDP needs CUDA GPUs (Lightning runs it on no other accelerator); "
            "use trainer=ddp or the default single-device trainer here",
        )
    if cfg.model.attention == "flash":
        why = flash_available()
        if why is not None:
            _fail("model.attention", f"flash {why}")
        if not precision.startswith(("bf16", "16")):
            _fail(
                "model.attention",
                f"flash runs in bf16/fp16 only, but trainer.precision is {precision}; "
                "use trainer.precision=bf16-mixed",
            )
    size = cfg.data.global_batch_size
    if size is not None:
        devices = devices_of(cfg.trainer)
        if devices is None:
            _fail("trainer.devices", "data.global_batch_size needs a device count, not 'auto'")
        per_step = cfg.data.micro_batch_size * devices
        if size % per_step:
            _fail(
                "data.global_batch_size",
                f"{size} is not divisible by micro_batch_size x devices = {per_step}",
            )
        accumulate = cfg.trainer.get("accumulate_grad_batches", 1)
        if accumulate not in (1, size // per_step):
            _fail(
                "trainer.accumulate_grad_batches",
                f"{accumulate} contradicts data.global_batch_size={size}",
            )


def _validate_data(data: DictConfig) -> None:
    if not data.domains:
        _fail("data.domains", "no domain configured; expected at least one (name: {source: ...})")
    if data.mixture is not None and not isinstance(data.mixture, DictConfig):
        _fail("data.mixture", f"expected a mapping {{domain: weight}}, got {data.mixture!r}")
    if not data.mixture:
        if data.train is None:
            _fail("data.train", "no training domain; set data.train or data.mixture")
        if data.train not in data.domains:
            _fail(
                "data.train",
                f"{data.train!r} is not a domain; expected one of {list(data.domains)}",
            )
    for name, weight in (data.mixture or {}).items():
        if name not in data.domains:
            _fail(f"data.mixture.{name}", f"not a domain; expected one of {list(data.domains)}")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
            _fail(f"data.mixture.{name}", f"expected a weight >= 0, got {weight!r}")
    if data.mixture and sum(data.mixture.values()) <= 0:
        _fail("data.mixture", "all weights are zero; expected at least one positive weight")
    if data.seq_len < 1:
        _fail("data.seq_len", f"expected a positive length, got {data.seq_len}")
    for name, domain in data.domains.items():
        try:
            check_source(SourceSpec(domain.source)) if not is_prepared(domain.source) else None
        except SourceError as err:
            _fail(f"data.domains.{name}.source", str(err))
    if data.micro_batch_size < 1:
        _fail(
            "data.micro_batch_size", f"expected a positive batch size, got {data.micro_batch_size}"
        )
    for name, domain in data.domains.items():
        if domain.max_docs is not None and domain.max_docs < 2:
            _fail(f"data.domains.{name}.max_docs", f"expected at least 2, got {domain.max_docs}")
        if domain.max_tokens is not None and domain.max_tokens < data.seq_len:
            _fail(
                f"data.domains.{name}.max_tokens",
                f"expected at least seq_len={data.seq_len}, got {domain.max_tokens}",
            )
        if domain.quality.keep is not None:
            try:
                QualityRule(**OmegaConf.to_container(domain.quality, resolve=True))
            except ValueError as err:
                _fail(*_split_key(f"data.domains.{name}.quality", str(err)))
        if domain.val_tokens < 1:
            _fail(
                f"data.domains.{name}.val_tokens",
                f"expected a positive count, got {domain.val_tokens}",
            )
