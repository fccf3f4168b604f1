"""`TaskEval`: lm-evaluation-harness tasks during training, and the stability gap on them.

At the steps of the stability-gap monitor's dense-then-sparse schedule (by default every step to
20, every 5 to 200, then every 50), and at every validation, the model in memory is evaluated on
lm-eval tasks (`cpt/tasks/harness.py`: lm-eval's prompts and metrics, our forward pass, under
the trainer's precision, split across ranks). Each metric is logged to every logger as
`task/<task>/<metric>` (e.g. `task/piqa/acc`). At the end each curve goes through the same
stability-gap measure as the loss (`gap_metrics`; for a metric where higher is better the gap is a
drop below the start), into `summary.json` as `task_gap`, with the first and last values as
`initial_tasks` / `final_tasks`. The curves are saved in checkpoints, so a resumed run goes on.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Iterator
from typing import Any

import lightning as L

from cpt.callbacks.base import expect, is_count
from cpt.callbacks.monitor import CurveMonitor
from cpt.run.geometry import BatchGeometry

log = logging.getLogger(__name__)


class TaskEval(CurveMonitor):
    prefix, gap_prefix = "task", "task_gap"

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
        super().__init__(dense, every, "callbacks.task_eval")
        key = "callbacks.task_eval"
        expect(is_count(batch_size), f"{key}.batch_size", "a count >= 1", batch_size)
        expect(num_fewshot is None or is_count(num_fewshot, 0), f"{key}.num_fewshot",
               "a count >= 0 or null", num_fewshot)  # fmt: skip
        self.tasks = [tasks] if isinstance(tasks, str) else list(tasks)
        self.include_path, self.limit, self.num_fewshot = include_path, limit, num_fewshot
        self.at_validation, self.batch_size = at_validation, batch_size
        self.domains = list(domains or [])  # the run's data domains: next_line_<domain> exists
        self.seconds, self.evaluations = 0.0, 0  # what the evaluations cost this process
        self._tasks: Any = None  # lm-eval's task objects, built once

    def check(self, geometry: BatchGeometry) -> None:
        """Before anything is written: every task exists, `limit` is a count or a fraction."""
        from cpt.tasks.index import EvalInputError, check_limit, check_tasks, task_manager

        if not self.tasks:
            raise ValueError("callbacks.task_eval.tasks: expected at least one lm-eval task")
        try:
            check_limit(self.limit)
            check_tasks(self.tasks, task_manager(self.include_path, tasks=self.tasks), self.domains)
        except EvalInputError as err:
            raise ValueError(f"callbacks.task_eval.{err}") from None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from lm_eval.tasks import get_task_dict

        from cpt.tasks.index import EvalInputError, builtin_requested, check_decodes, task_manager
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

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.at_validation and trainer.state.fn == "fit" and not trainer.sanity_checking:
            self._evaluate(trainer, pl_module, trainer.global_step)

    def ready(self) -> bool:
        return self._tasks is not None

    def measure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, list[Any]]:
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
        return {
            "task_gap": self.metrics,
            "initial_tasks": {name: curve[0][1] for name, curve in self.curves.items()},
            "final_tasks": {name: curve[-1][1] for name, curve in self.curves.items()},
            "task_eval": {"evaluations": self.evaluations, "seconds": round(self.seconds, 2)},
        }


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
