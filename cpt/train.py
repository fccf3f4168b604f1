"""Entry point: `python -m cpt.train [overrides]` (add `-m` for a multirun grid).

Reads top-down: compose (Hydra), build everything that needs no data once (`cpt.run.build`),
prepare the data, validate before training (the "before" of continual pre-training), fit,
validate again and summarize into `summary.json`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.errors import HydraException
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from cpt import config as config_schema
from cpt.callbacks.base import RunPart
from cpt.checkpoints.files import AtomicCheckpointIO, read_lightning_checkpoint
from cpt.data.datamodule import CPTDataModule
from cpt.data.quality import reference_key, select_windows
from cpt.data.tokenizer import TokenizerError
from cpt.errors import UserError, exit_with, reported
from cpt.module import CPTModule
from cpt.results.loggers import keep_metrics_until, publish_summary, run_config
from cpt.run import build as preflight
from cpt.run.build import Built
from cpt.run.initial import load_into, reference_scorer
from cpt.run.user_configs import check_search_path
from cpt.scale.allocator import keep_freed_memory
from cpt.scale.launch import launch, requeue_id
from cpt.scale.requeue import TimeLimit, requeue_after_save

log = logging.getLogger(__name__)

config_schema.register()
# The CSV metrics share the run folder with Hydra's files on purpose.
warnings.filterwarnings("ignore", message="Experiment logs directory .* exists and is not empty")
# Validation losses are summed over ranks before they are logged (CPTModule): already global.
warnings.filterwarnings("ignore", message=r".*It is recommended to use `self.log\(.*sync_dist=True")
# Raised inside Lightning itself with recent torch; nothing a user can act on.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")


def run(cfg: DictConfig, built: Built | None = None) -> dict[str, Any]:
    """Train as `cfg` says (with the objects `built` from it, else built here); returns the
    summary that is also written to `summary.json`. Inside a SLURM job, its time-limit warning
    is taken from the start (`cpt.scale.requeue`), data preparation included."""
    built = built or preflight.build(cfg)
    time_limit = TimeLimit().install()
    try:
        return _run(cfg, built, time_limit)
    finally:
        time_limit.uninstall()


def _run(cfg: DictConfig, built: Built, time_limit: TimeLimit) -> dict[str, Any]:
    config, geometry = built.config, built.geometry
    out = Path(config.output_dir)
    L.seed_everything(config.seed, workers=True)
    datamodule = CPTDataModule(config.data, geometry, config.seed, built.seen)
    if launch().is_global_zero:  # the others wait for its files instead of writing their own
        datamodule.prepare_data()
        datamodule.check_held_out(built.initial.data_state)  # before any file is written
    else:
        datamodule.wait_prepared()
        log.info("rank %d waited for global rank 0 to prepare the data", launch().rank)
    if datamodule.vocab_size > built.initial.config.vocab_size:
        raise TokenizerError(
            f"data.tokenizer: {datamodule.vocab_size} tokens do not fit the model's "
            f"vocab_size {built.initial.config.vocab_size}"
        )
    options = {k: v for k, v in asdict(config.model).items() if k != "name"}  # how it runs
    module = CPTModule(
        arch=built.initial.config.to_dict(),
        optim=asdict(config.optim),
        domains=datamodule.domain_names,
        sources=list(datamodule.weights),
        **options,
    )
    load_into(module.model, built.initial)
    select_by_quality(config, datamodule, module.model)

    out.mkdir(parents=True, exist_ok=True)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    (out / "config.resolved.yaml").write_text(OmegaConf.to_yaml(resolved))
    datamodule.tokenizer.save(str(out / "tokenizer.json"))  # a run folder is self-contained
    if built.resume is not None and launch().is_global_zero:
        keep_metrics_until(out, read_lightning_checkpoint(built.resume, ())["global_step"])
    loggers = preflight.instantiate_all(cfg.logger, "logger")
    for logger in loggers:
        logger.log_hyperparams(run_config(resolved))
    trainer = L.Trainer(
        **built.trainer_args,
        callbacks=built.callbacks,
        logger=loggers or False,
        default_root_dir=str(out),
        plugins=[AtomicCheckpointIO(), *cluster_plugins()],
    )
    time_limit.watch(trainer)
    if config.keep_freed_memory and isinstance(trainer.accelerator, CPUAccelerator):
        keep_freed_memory()  # the model's tensors live in host memory: reuse, do not re-fault
    started, finished = time.time(), False
    try:
        if config.eval_before_fit and built.resume is None:
            trainer.validate(module, datamodule=datamodule, verbose=False)
            module.initial_val = dict(module.last_val)
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=built.resume)
        except SIGTERMException:
            if requeue_after_save(time_limit):  # leave without a result: the job runs again
                step = trainer.global_step
                raise Requeued(f"requeued SLURM job {requeue_id()} at step {step}") from None
            raise
        held = module.state_bytes()  # every rank takes part (the most over ranks)
        if module.last_val_step != trainer.global_step:  # not when fit's last step validated
            trainer.validate(module, datamodule=datamodule, verbose=False)
        summary = {
            "init": config.init,
            "resume": built.resume,
            "geometry": geometry.to_dict(),
            "mixture": datamodule.mixture_weights(max(trainer.global_step - 1, 0)),
            "steps": trainer.global_step,
            "tokens": module.tokens_seen,
            "skipped_steps": module.skipped_steps,
            "tokens_per_source": datamodule.tokens_consumed(trainer.global_step),
            "wall_time_s": round(time.time() - started, 2),
            "initial_val_loss": dict(module.initial_val),  # a resumed run's from its checkpoint
            "final_val_loss": dict(module.last_val),
            "parameters": built.initial.config.num_parameters(),
            "state_bytes_per_process": held,
        }
        for part in (*built.callbacks, trainer.strategy):  # the callback protocol's second half
            if isinstance(part, RunPart):
                summary.update(part.summary())
        if trainer.is_global_zero:
            (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
            publish_summary(loggers, summary)
        finished = True
        return summary
    finally:
        _finish_wandb(loggers, finished, time_limit.signalled is not None)


def select_by_quality(config: Any, datamodule: CPTDataModule, model: Any) -> None:
    """Domains with a `quality` rule train on the windows their reference model scores best.

    The scoring runs in the datamodule's `setup`, on every rank after the data is prepared; the
    scores are cached, so ranks and later jobs of a sweep read them instead.
    """
    for name, domain in config.data.domains.items():
        rule = domain.quality
        if not rule.enabled:
            continue

        def selector(windows: Any, name: str = name, rule: Any = rule) -> Any:
            with reference_scorer(rule.reference, model) as score:
                kept = select_windows(
                    score,
                    windows,
                    rule,
                    seed=config.seed,
                    name=name,
                    cache_dir=Path(config.data.dir).expanduser() / "quality",
                    key=reference_key(rule.reference, config.init, config.model.name),
                )
            log.info("data.domains.%s.quality: training on %d of its windows", name, len(kept))
            return kept

        datamodule.select_with(name, selector)


class Requeued(SystemExit):
    """The run saved its state and its SLURM job was requeued: the process ends without a result
    (submitit's launcher then waits for the requeued job)."""


def cluster_plugins() -> list[Any]:
    """Under `srun`, Lightning's SLURM environment without its own auto-requeue (which saves in
    the middle of a step): the requeue path is `cpt.scale.requeue`."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    return [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []


def _finish_wandb(loggers: list[Any], finished: bool, preempted: bool) -> None:
    """Close wandb runs even after a failure, so that a multirun never mixes two jobs; a run
    stopped for a requeue is marked preempting (its requeued job continues the same wandb run)."""
    if any(type(lg).__name__ == "WandbLogger" for lg in loggers):
        import wandb

        if preempted and wandb.run is not None:
            wandb.run.mark_preempting()
        wandb.finish(exit_code=0 if finished else 1)


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> None:
    if preflight.finished_and_skipped(cfg):
        log.info("finished already (skip_finished=true): %s", cfg.output_dir)
        return  # a grid run again goes on where it stopped
    try:
        summary = run(cfg, preflight.take(cfg.output_dir))
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
    log.info("final validation loss: %s", summary["final_val_loss"])


def cli() -> None:
    """`python -m cpt.train`: a single run's bad input, Hydra's composition errors included, is
    one line on stderr and exit status 2 (`HYDRA_FULL_ERROR=1`: a traceback instead)."""
    with reported():
        check_search_path(sys.argv[1:])  # one's own config folder: there, and hiding nothing
    if any(a in ("-m", "--multirun") for a in sys.argv[1:]) or _full_errors():
        return main()  # a grid: Hydra reports per job
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises instead of printing; reported here
    os.environ["CPT_ONE_LINE_ERRORS"] = "1"  # ... as one line, also in DDP's child processes
    try:
        main()
    except (HydraException, OmegaConfBaseException, UserError) as err:
        exit_with(err)


def _full_errors() -> bool:
    return os.environ.get("HYDRA_FULL_ERROR") == "1" and not os.environ.get("CPT_ONE_LINE_ERRORS")


if __name__ == "__main__":
    cli()
