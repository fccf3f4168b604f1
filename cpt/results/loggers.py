"""Logger factories: wandb goes offline by itself when no API key is configured."""

from __future__ import annotations

import csv
import netrc
import os
import uuid
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from cpt.files import write_text_atomic, written_atomically
from cpt.results.columns import overrides_as_columns, recorded, summary_columns
from cpt.results.naming import short_dirname
from cpt.scale.launch import launch


def wandb_api_key_configured() -> bool:
    """True when `WANDB_API_KEY` is set or `wandb login` wrote the key into ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def job_overrides() -> list[str]:
    """The current Hydra job's overrides (as `.hydra/overrides.yaml` holds them); [] outside one."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except (ImportError, ValueError):
        return []


def hydra_job() -> dict[str, Any]:
    """Name, group and tags of the current Hydra job; empty outside one.

    In a multirun the name is the job's folder (`3_max_lr=0.002,fraction=0.25`: what the sweep
    varies, `cpt/results/naming.py`), the same string as the `run` column of `python -m
    cpt.analysis.collect`; the group is the sweep's folder; every override is a tag."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hydra = HydraConfig.get()
    except (ImportError, ValueError):
        return {}
    overrides = [o for o in hydra.overrides.task if recorded(o)]
    job: dict[str, Any] = {"tags": [o[:64] for o in overrides]}
    if hydra.job.override_dirname:
        job["name"] = short_dirname(hydra.job.override_dirname)
    if hydra.mode == RunMode.MULTIRUN:
        job["group"] = Path(hydra.sweep.dir).name
        job["name"] = Path(hydra.runtime.output_dir).name
    return job


def run_config(resolved: dict[str, Any]) -> dict[str, Any]:
    """The config a logger records: the resolved config, plus the job's overrides as a list
    (`overrides`) and each as a top-level key (`optim.max_lr`), so that a runs table sorts and
    plots the swept values directly and `collect --wandb` rebuilds the same columns."""
    overrides = job_overrides()
    columns = overrides_as_columns(overrides)  # a group choice (`callbacks=[...]`) stays nested
    return {
        **resolved,
        **{k: v for k, v in columns.items() if k not in resolved},
        "overrides": overrides,
    }


def publish_summary(loggers: list[Any], summary: dict[str, Any]) -> None:
    """`summary.json` into the wandb run summary: flat keys named as the tidy table's columns
    (`cpt/results/columns.py`), and the whole of it as `cpt_summary` for `collect --wandb`."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.experiment.summary.update({**summary_columns(summary), "cpt_summary": summary})


def wandb_logger(
    project: str,
    save_dir: str,
    name: str | None = None,
    group: str | None = None,
    tags: list[str] | None = None,
    mode: str | None = None,
    **kwargs: Any,
) -> WandbLogger:
    """A WandbLogger writing under `save_dir`; `mode=None` means online only with a key.

    Inside a Hydra job, `name` defaults to the job's overrides, `group` to the multirun's sweep
    folder, and the overrides become tags, so that a sweep reads well in wandb.
    """
    mode = (
        mode
        or os.environ.get("WANDB_MODE")
        or ("online" if wandb_api_key_configured() else "offline")
    )
    job = hydra_job()
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    return WandbLogger(
        project=project,
        save_dir=save_dir,
        name=name or job.get("name"),
        group=group or job.get("group"),
        tags=list(tags or []) + job.get("tags", []),
        mode=mode,
        **{"id": run_id(Path(save_dir)), "resume": "allow", **kwargs},
    )


def run_id(folder: Path) -> str | None:
    """The wandb run of this run folder: made once (by global rank 0, the one that logs) and kept
    in `wandb-id.txt`, so that a resumed or requeued run continues the same wandb run."""
    path = folder / "wandb-id.txt"
    if path.is_file():
        return path.read_text().strip()
    if not launch().is_global_zero:
        return None
    made = uuid.uuid4().hex[:8]
    write_text_atomic(path, made + "\n")
    return made


class CSVLogger(LightningCSVLogger):
    """Lightning's CSV logger continuing the run folder's `metrics.csv` (Lightning's deletes it when
    the folder is not empty): a resumed run's rows follow those logged before its checkpoint."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuingWriter(log_dir=self.log_dir)
        return self._experiment


class _ContinuingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as handle:
                self.metrics_keys = next(csv.reader(handle), [])


def keep_metrics_until(folder: Path, step: int) -> None:
    """Before a run resumes from its checkpoint at `step`: drop the rows it logged after it (a run
    killed between checkpoints logged steps it now trains again)."""
    path = folder / "metrics.csv"
    if not path.is_file():
        return
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        rows, header = list(reader), reader.fieldnames or []
    kept = [r for r in rows if not r.get("step") or int(float(r["step"])) <= step]
    if len(kept) == len(rows):
        return
    with written_atomically(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header)
        writer.writeheader()
        writer.writerows(kept)
