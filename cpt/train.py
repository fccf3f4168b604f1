"""Entry point: `python -m cpt.train [overrides]` (add `-m` for a multirun grid).

Reads top-down: validate the config, build the datamodule, the model (from scratch, a Hugging Face
checkpoint or a cpt checkpoint), callbacks, loggers and trainer; validate before training (the
"before" of continual pre-training), fit, validate again and write `summary.json`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf, open_dict

from cpt import config as config_schema
from cpt.callbacks import PartialFreeze, Rewarm, StabilityGap, WeightDrift
from cpt.checkpoints import AtomicCheckpointIO, initial_model, load_into
from cpt.config import ConfigError, devices_of, validate
from cpt.data.datamodule import CPTDataModule
from cpt.data.sources import SourceError
from cpt.data.tokenizer import TokenizerError
from cpt.models.hf import CheckpointError
from cpt.module import CPTModule, NonFiniteLossError

log = logging.getLogger(__name__)
# What a user can get wrong; reported as one line, exit status 2, no traceback.
USER_ERRORS = (ConfigError, CheckpointError, SourceError, TokenizerError, NonFiniteLossError)

config_schema.register()
# The CSV metrics share the run folder with Hydra's files on purpose.
warnings.filterwarnings("ignore", message="Experiment logs directory .* exists and is not empty")
# Raised inside Lightning itself with recent torch; nothing a user can act on.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")


def resolve_resume(resume: str | None, out: Path) -> str | None:
    """`auto`: the newest checkpoint in `out/checkpoints` (None when there is none yet)."""
    if resume != "auto":
        return resume
    # checkpoints are written atomically (temporary file, then rename): any *.ckpt is complete
    candidates = [*(out / "checkpoints").glob("*.ckpt"), *out.glob("hpc_ckpt_*.ckpt")]
    candidates.sort(key=lambda p: p.stat().st_mtime)
    return str(candidates[-1]) if candidates else None


def build_callbacks(group: DictConfig) -> list[Any]:
    """The callbacks, whose own argument checks become one-line config errors."""
    try:
        callbacks = _instantiate_all(group)
    except Exception as err:
        cause = err.__cause__ if isinstance(err.__cause__, ValueError) else err
        raise ConfigError(f"callbacks: {cause}") from None
    if sum(isinstance(c, Rewarm) for c in callbacks) != 1:
        raise ConfigError(
            "callbacks: expected exactly one Rewarm entry (it sets the learning rate)"
        )
    return callbacks


def _instantiate_all(group: DictConfig) -> list[Any]:
    """Every entry of a callbacks/logger dict that has a `_target_`, in config order."""
    return [instantiate(entry) for entry in group.values() if entry and "_target_" in entry]


def trainer_arguments(trainer: DictConfig) -> dict[str, Any]:
    """`lightning.Trainer` keyword arguments; a `strategy` with a `_target_` is instantiated."""
    args = dict(trainer)
    strategy = args.get("strategy")
    if isinstance(strategy, DictConfig) and "_target_" in strategy:
        try:
            args["strategy"] = instantiate(strategy)
        except Exception as err:
            cause = err.__cause__ if isinstance(err.__cause__, ValueError) else err
            raise ConfigError(f"trainer.strategy: {cause}") from None
    return args


def _is_rank_zero() -> bool:
    return int(os.environ.get("LOCAL_RANK", 0)) == 0 and int(os.environ.get("NODE_RANK", 0)) == 0


def preflight(cfg: DictConfig) -> tuple[str | None, list[Any], Any]:
    """Every check that needs no data: config, output folder, callbacks, the starting model.

    Returns the checkpoint to resume (or None), the callbacks and the initial model.
    """
    validate(cfg)
    out = Path(cfg.output_dir)
    resume = resolve_resume(cfg.resume, out)
    if (out / "summary.json").is_file() and resume is None and not cfg.overwrite:
        raise ConfigError(
            f"output_dir: {out} already holds a finished run (summary.json); "
            "choose another folder, resume=auto, or overwrite=true"
        )
    callbacks = build_callbacks(cfg.callbacks)
    trainer_arguments(cfg.trainer)  # a bad strategy option fails here, before any data work
    initial = initial_model(cfg.init, cfg.model.name)  # a resume then restores all of its state
    if cfg.data.seq_len > initial.config.max_position_embeddings:
        raise ConfigError(
            f"data.seq_len: {cfg.data.seq_len} exceeds the model's "
            f"max_position_embeddings {initial.config.max_position_embeddings}"
        )
    return resume, callbacks, initial


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train as `cfg` says; returns the summary that is also written to `summary.json`."""
    resume, callbacks, initial = preflight(cfg)
    out = Path(cfg.output_dir)
    L.seed_everything(cfg.seed, workers=True)
    datamodule = CPTDataModule.from_config(cfg.data, cfg.seed)
    if _is_rank_zero():
        datamodule.prepare_data()
    if datamodule.vocab_size > initial.config.vocab_size:
        raise TokenizerError(
            f"data.tokenizer: {datamodule.vocab_size} tokens do not fit the model's "
            f"vocab_size {initial.config.vocab_size}"
        )
    module = CPTModule(
        arch=initial.config.to_dict(),
        attention=cfg.model.attention,
        loss=cfg.model.loss,
        activation_checkpointing=cfg.model.activation_checkpointing,
        compile=cfg.model.compile,
        optim=OmegaConf.to_container(cfg.optim, resolve=True),
        domains=datamodule.domain_names,
        sources=list(datamodule.weights),
    )
    load_into(module.model, initial)
    select_by_quality(cfg, datamodule, module.model)

    out.mkdir(parents=True, exist_ok=True)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    (out / "config.resolved.yaml").write_text(OmegaConf.to_yaml(resolved))
    datamodule.tokenizer.save(str(out / "tokenizer.json"))  # a run folder is self-contained
    loggers = _instantiate_all(cfg.logger)
    for logger in loggers:
        logger.log_hyperparams(resolved)
    trainer_args = trainer_arguments(cfg.trainer)
    if cfg.data.global_batch_size is not None:  # validated: divisible by micro x devices
        per_step = cfg.data.micro_batch_size * devices_of(cfg.trainer)
        trainer_args["accumulate_grad_batches"] = cfg.data.global_batch_size // per_step
    trainer = L.Trainer(
        **trainer_args,
        callbacks=callbacks,
        logger=loggers or False,
        default_root_dir=str(out),
        plugins=[AtomicCheckpointIO()],
    )
    started, finished = time.time(), False
    try:
        initial_val = {}
        if cfg.eval_before_fit and resume is None:
            trainer.validate(module, datamodule=datamodule, verbose=False)
            initial_val = dict(module.last_val)
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
        trainer.validate(module, datamodule=datamodule, verbose=False)
        summary = {
            "init": cfg.init,
            "resume": resume,
            "mixture": datamodule.mixture_weights(max(trainer.global_step - 1, 0)),
            "steps": trainer.global_step,
            "tokens": module.tokens_seen,
            "tokens_per_source": datamodule.tokens_consumed(trainer.global_step),
            "wall_time_s": round(time.time() - started, 2),
            "initial_val_loss": initial_val,
            "final_val_loss": dict(module.last_val),
            "parameters": initial.config.num_parameters(),
            **_callback_results(callbacks),
        }
        if trainer.is_global_zero:
            (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        finished = True
        return summary
    finally:
        _finish_wandb(loggers, finished)


def select_by_quality(cfg: DictConfig, datamodule: CPTDataModule, model: Any) -> None:
    """Domains with a `quality` rule train on the windows their reference model scores best.

    The scoring runs in the datamodule's `setup`, on every rank after the data is prepared; the
    scores are cached, so ranks and later jobs of a sweep read them instead.
    """
    import torch

    from cpt.models.registry import build_model
    from cpt.quality import QualityRule, reference_key, select_windows

    for name, values in cfg.data.domains.items():
        if values.quality.keep is None:
            continue
        rule = QualityRule(**OmegaConf.to_container(values.quality, resolve=True))

        def selector(windows: Any, name: str = name, rule: QualityRule = rule) -> Any:
            reference = model
            if rule.reference != "init":
                initial = initial_model(rule.reference, None)
                reference = build_model(initial.config)
                reference.set_loss("chunked")  # no [tokens, vocab] logits per scored batch
                load_into(reference, initial)
            home = next(reference.parameters()).device
            device = home
            if home.type == "cpu" and torch.cuda.is_available():
                device = torch.device("cuda", torch.cuda.current_device())
            reference.to(device)
            try:
                kept = select_windows(
                    reference,
                    windows,
                    rule,
                    seed=cfg.seed,
                    name=name,
                    cache_dir=Path(cfg.data.dir).expanduser() / "quality",
                    key=reference_key(rule.reference, cfg.init),
                )
            finally:
                reference.to(home)  # the model being trained stays where the trainer put it
            log.info("data.domains.%s.quality: training on %d of its windows", name, len(kept))
            return kept

        datamodule.select_with(name, selector)


def _callback_results(callbacks: list[Any]) -> dict[str, Any]:
    """What the measuring callbacks found, for summary.json."""
    results: dict[str, Any] = {}
    for callback in callbacks:
        if isinstance(callback, StabilityGap):
            results["stability_gap"] = callback.metrics
        elif isinstance(callback, WeightDrift):
            results["weight_drift"] = callback.drift
        elif isinstance(callback, PartialFreeze):
            results["frozen_parameters"] = callback.frozen
    return results


def _finish_wandb(loggers: list[Any], finished: bool) -> None:
    """Close wandb runs even after a failure, so that a multirun never mixes two jobs."""
    if any(type(lg).__name__ == "WandbLogger" for lg in loggers):
        import wandb

        wandb.finish(exit_code=0 if finished else 1)


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> None:
    try:
        summary = run(cfg)
    except SIGTERMException:
        print("preempted (SIGTERM): checkpoint saved; continue with resume=auto", file=sys.stderr)
        return
    except Exception as err:
        if _in_multirun():
            # the job's own folder records why; Hydra runs the other jobs and reports at the end
            Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
            (Path(cfg.output_dir) / "error.txt").write_text(f"{type(err).__name__}: {err}\n")
            log.error("job failed: %s", err)
            raise
        if not isinstance(err, USER_ERRORS) or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    log.info("final validation loss: %s", summary["final_val_loss"])


def precheck(argv: list[str]) -> None:
    """Compose and validate once before Hydra does: a bad input is one line, exit 2, no files."""
    if any(a in ("-m", "--multirun") or a.startswith("-") for a in argv) or os.environ.get(
        "HYDRA_FULL_ERROR"
    ):
        return  # multirun and Hydra's own flags: Hydra reports per job
    from hydra import compose, initialize_config_dir

    conf = Path(__file__).resolve().parents[1] / "conf"
    try:
        with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
            cfg = compose("train", overrides=argv, return_hydra_config=True)
        run_dir = str(cfg.hydra.run.dir)  # the folder Hydra is about to create
        with open_dict(cfg):
            del cfg["hydra"]
        cfg.output_dir = run_dir
        preflight(cfg)  # before Hydra creates the run folder
    except Exception as err:
        message = " ".join(str(err).split())
        cause = err.__cause__
        if cause is not None and str(cause).split("\n")[0] not in message:
            message += f" ({str(cause).splitlines()[0]})"
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    precheck(sys.argv[1:])
    main()
