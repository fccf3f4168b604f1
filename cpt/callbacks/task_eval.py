"""`TaskEval`: lm-evaluation-harness tasks during training, and the stability gap on them.

At the steps of the stability-gap monitor's dense-then-sparse schedule (by default every step to
20, every 5 to 200, then every 50), and at every validation, the model in memory is evaluated on
lm-eval tasks (`cpt/tasks/harness.py`: lm-eval's prompts and metrics, our forward pass, under
the trainer's precision, split across ranks). Each metric is logged to every logger as
`task/<task>/<metric>` (e.g. `task/piqa/acc`). At the end each curve goes through the same
stability-gap measure as the loss (`gap_metrics`; for a metric where higher is better the gap is a
drop below the start), into `summary.json` as `task_gap`, with the first and last values as
`initial_tasks` / `final_tasks`. The curves are saved in checkpoints, so a resumed run goes on.
The scores at step 0 are read instead when an earlier run of the grid measured the same starting
weights on the same tasks (`share_start_measurements`, `cpt/start_measurements.py`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L

from cpt.callbacks.stability_gap import eval_steps, gap_metrics
from cpt.geometry import BatchGeometry
from cpt.start_measurements import files_digest, measured_once

log = logging.getLogger(__name__)


class TaskEval(L.Callback):
    def __init__(
        self,
        tasks: list[str],
        include_path: str | None = None,
        limit: int | float | None = 200,
        dense: list[list[int]] | None = None,
        every: int = 50,
        at_validation: bool = True,
        num_fewshot: int | None = None,
        batch_size: int = 32,
        domains: list[str] | None = None,
    ) -> None:
        self.tasks = [tasks] if isinstance(tasks, str) else list(tasks)
        self.include_path, self.limit, self.num_fewshot = include_path, limit, num_fewshot
        self.dense = [list(p) for p in (dense if dense is not None else [[20, 1], [200, 5]])]
        self.every, self.at_validation, self.batch_size = every, at_validation, batch_size
        self.domains = list(domains or [])  # the run's data domains: next_line_<domain> exists
        self.curves: dict[str, list[tuple[int, float, float]]] = {}
        self.higher: dict[str, bool] = {}
        self.metrics: dict[str, dict[str, Any]] = {}
        self._steps: set[int] = set()
        self.seconds, self.evaluations = 0.0, 0  # what the evaluations cost this process
        self._tasks: Any = None  # lm-eval's task objects, built once

    def check(self, geometry: BatchGeometry) -> None:
        """Before anything is written: every task exists, `limit` is a count or a fraction."""
        from cpt.evaluate import EvalInputError, check_limit, check_tasks, task_manager

        if not self.tasks:
            raise ValueError("callbacks.task_eval.tasks: expected at least one lm-eval task")
        try:
            check_limit(self.limit)
            check_tasks(self.tasks, task_manager(self.include_path, tasks=self.tasks), self.domains)
        except EvalInputError as err:
            raise ValueError(f"callbacks.task_eval.{err}") from None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from lm_eval.tasks import get_task_dict

        from cpt.evaluate import EvalInputError, builtin_requested, check_decodes, task_manager
        from cpt.tasks.next_line import write_tasks

        manager = task_manager(self.include_path, tasks=self.tasks)
        if builtin_requested(self.tasks, manager):
            data = trainer.datamodule  # prepared: the entry point prepares before fit
            folder = write_tasks(data.root, data.prepared, data.tokenizer)
            manager = task_manager(self.include_path, folder, tasks=self.tasks)
            if trainer.is_global_zero:
                log.info("built-in tasks in %s", folder)
        try:
            check_decodes(self.tasks, manager, trainer.datamodule.tokenizer)
        except EvalInputError as err:
            raise EvalInputError(f"callbacks.task_eval.{err}") from None
        self._tasks = get_task_dict(self.tasks, manager)
        if self.num_fewshot is not None:
            for task in _leaves(self._tasks):
                task.set_config(key="num_fewshot", value=self.num_fewshot)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._steps = eval_steps(self.dense, self.every, trainer.max_steps)
        if trainer.global_step == 0 and not self.curves:
            self._evaluate_start(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.global_step in self._steps:
            self._evaluate(trainer, pl_module, trainer.global_step)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.at_validation and trainer.state.fn == "fit" and not trainer.sanity_checking:
            self._evaluate(trainer, pl_module, trainer.global_step)

    def _evaluate_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Step 0: read when an earlier run measured the same weights (`cpt.start_measurements`)."""
        if self._tasks is None:
            return
        measure = functools.partial(self._measure, trainer, pl_module)
        points = measured_once(pl_module, "task_eval", self._start_detail, measure)
        self._record(trainer, 0, points)

    def _start_detail(self) -> dict[str, Any]:
        """What decides the tasks' scores besides the weights (the task files' bytes included)."""
        return {
            "tasks": self.tasks,
            "include_path": self.include_path,
            "include_files": files_digest(Path(self.include_path)) if self.include_path else None,
            "limit": self.limit,
            "num_fewshot": self.num_fewshot,
            "batch_size": self.batch_size,
        }

    def _evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int) -> None:
        if self._tasks is None or self._last_step() == step:
            return
        self._record(trainer, step, self._measure(trainer, pl_module))

    def _record(self, trainer: L.Trainer, step: int, points: dict[str, list[Any]]) -> None:
        """Each metric's (value, standard error, higher is better) at `step`: curves, loggers."""
        for name, (value, stderr, higher) in points.items():
            self.curves.setdefault(name, []).append((step, value, stderr))
            self.higher[name] = higher
        measured = {f"task/{name}": value for name, (value, _, _) in points.items()}
        for logger in trainer.loggers:
            logger.log_metrics(measured, step=step)

    def _measure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, list[Any]]:
        """Every rank evaluates (FSDP's forward passes are collective); loggers are rank 0's."""
        from lm_eval.evaluator import evaluate

        from cpt.tasks.harness import HarnessLM

        started = time.perf_counter()
        was_training = pl_module.training
        pl_module.eval()
        lm = HarnessLM(
            pl_module.model,
            trainer.datamodule.tokenizer,
            context=trainer.precision_plugin.forward_context,
            batch_size=self.batch_size,
            quiet=True,
        )
        try:
            with _quiet():
                results = evaluate(
                    lm=lm,
                    task_dict=self._tasks,
                    limit=self.limit,
                    log_samples=False,
                    bootstrap_iters=100,  # accuracy's standard error is exact; others resampled
                    verbosity="ERROR",
                )
        finally:
            if was_training:
                pl_module.train()
            self.seconds += time.perf_counter() - started
            self.evaluations += 1
        points = {}
        for task, values in results["results"].items():
            higher = results.get("higher_is_better", {}).get(task, {})
            for key, value in values.items():
                metric, _, flt = key.partition(",")
                if (
                    "stderr" in metric
                    or not isinstance(value, (int, float))
                    or metric == "sample_len"
                ):
                    continue
                name = f"{task}/{metric}" + (f"/{flt}" if flt and flt != "none" else "")
                stderr = values.get(f"{metric}_stderr,{flt}")
                stderr = float(stderr) if isinstance(stderr, (int, float)) else 0.0
                points[name] = [float(value), stderr, bool(higher.get(metric, True))]
        return points

    def _last_step(self) -> int | None:
        return next(iter(self.curves.values()))[-1][0] if self.curves else None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for name, curve in self.curves.items():
            steps, values, stderrs = zip(*curve)
            self.metrics[name] = gap_metrics(
                list(steps), list(values), self.higher.get(name, True), list(stderrs)
            )
        for logger in trainer.loggers:
            flat = {
                f"task_gap/{name}/{key}": (math.nan if value is None else float(value))
                for name, m in self.metrics.items()
                for key, value in m.items()
                if isinstance(value, (int, float)) or value is None
            }
            logger.log_metrics(flat, step=trainer.global_step)

    def gap_curves(self) -> dict[str, tuple[list[tuple[int, float, float]], dict[str, Any]]]:
        """The curves the stability-gap figure draws: each task's first metric (acc_norm where
        lm-eval reports it: the choices of a multiple-choice task differ in length)."""
        chosen: dict[str, str] = {}
        for name in self.curves:
            task = name.split("/")[0]
            if task not in chosen or name.split("/")[1] == "acc_norm":
                chosen[task] = name
        return {n: (self.curves[n], self.metrics[n]) for n in chosen.values() if n in self.metrics}

    def summary(self) -> dict[str, Any]:
        """The callback protocol: what this callback adds to `summary.json`."""
        return {
            "task_gap": self.metrics,
            "initial_tasks": {name: curve[0][1] for name, curve in self.curves.items()},
            "final_tasks": {name: curve[-1][1] for name, curve in self.curves.items()},
            "task_eval": {"evaluations": self.evaluations, "seconds": round(self.seconds, 2)},
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "curves": {k: [list(p) for p in v] for k, v in self.curves.items()},
            "higher": dict(self.higher),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.curves = {
            k: [(int(p[0]), float(p[1]), float(p[2])) for p in v]
            for k, v in state.get("curves", {}).items()
        }
        self.higher = {k: bool(v) for k, v in state.get("higher", {}).items()}


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """lm-eval 0.4 logs every evaluation at INFO and draws two progress bars per task, with no
    switch: inside the training loop they would bury the training's own progress bar."""
    import lm_eval.api.task as lm_eval_task
    from tqdm import tqdm

    logger = logging.getLogger("lm_eval")
    level, bar = logger.level, lm_eval_task.tqdm
    logger.setLevel(logging.WARNING)
    lm_eval_task.tqdm = functools.partial(tqdm, disable=True)
    try:
        yield
    finally:
        logger.setLevel(level)
        lm_eval_task.tqdm = bar


def _leaves(tasks: dict[Any, Any]) -> list[Any]:
    """The task objects of lm-eval's (possibly nested, for groups) task dict."""
    found = []
    for value in tasks.values():
        found.extend(_leaves(value) if isinstance(value, dict) else [value])
    return found
