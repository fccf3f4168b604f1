"""lm-eval's task index for a run or a checkpoint: lm-eval's own tasks, a user's folder
(`include_path`) and the built-in next-line tasks written for a run; checked before any weights
are read (`cpt.evaluate`) or any file is written (`callbacks.task_eval`).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from cpt.errors import UserError
from cpt.tasks.next_line import DOMAIN_PREFIX, domain_of, task_name


class EvalInputError(UserError, ValueError):
    """Bad input to `cpt.evaluate` or the task evaluation: reported as one line."""


def check_limit(limit: Any) -> None:
    if limit is None:
        return
    if isinstance(limit, bool) or not isinstance(limit, (int, float)) or limit <= 0:
        raise EvalInputError(f"limit: expected a count >= 1 or a fraction in (0, 1], got {limit!r}")
    if isinstance(limit, float) and limit > 1:
        raise EvalInputError(f"limit: a fraction must be in (0, 1], got {limit}")


def task_manager(include_path: str | None, *generated: Path, tasks: list[str] | None = None) -> Any:
    """lm-eval's task index, with the user's folder (a folder without YAMLs is refused) and the
    folders of built-in tasks written for this run. When `tasks` are all built-in next-line tasks,
    lm-eval's own ~15k task files are left out of it (indexing them takes seconds per process)."""
    defaults = tasks is None or any(domain_of(t) is None for t in tasks)
    folders = [str(Path(f).resolve()) for f in generated]
    if include_path is not None:
        folder = Path(include_path).expanduser().resolve()
        if not folder.is_dir():
            raise EvalInputError(f"include_path: {folder}: no such folder")
        if not any(folder.rglob("*.yaml")):
            raise EvalInputError(f"include_path: {folder}: no task YAML files in it")
        folders.insert(0, str(folder))
    return _index(tuple(folders), defaults)


@functools.lru_cache(maxsize=4)
def _index(folders: tuple[str, ...], defaults: bool = True) -> Any:
    """Indexing lm-eval's ~15k task files takes seconds: once per set of folders and process."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=list(folders) or None, include_defaults=defaults)


def check_tasks(tasks: list[str], manager: Any, domains: list[str] | None = None) -> None:
    """Every name is a task lm-eval knows, or a built-in task of one of the run's `domains`."""
    known = set(manager.all_tasks)
    for name in tasks:
        domain = domain_of(name)
        if name not in known and domain is not None and domain not in (domains or []):
            builtin = [task_name(d) for d in domains or []]
            builtin += [task_name(d, DOMAIN_PREFIX) for d in domains or [] if len(domains) > 1]
            raise EvalInputError(
                f"tasks: {name!r} is a built-in next-line task of a domain {domain!r} this run "
                f"does not have; expected one of {builtin}"
                if domains
                else f"tasks: {name!r} is a built-in task made from a cpt run's held-out "
                "documents; evaluate that run's checkpoint (ckpt=) or name the task folder it "
                "wrote (include_path=)"
            )
        if name not in known and domain is None:
            raise EvalInputError(
                f"tasks: unknown task {name!r}; expected an lm-eval task, group or tag "
                "(lm_eval --tasks list) or one in include_path"
            )


def builtin_requested(tasks: list[str], manager: Any) -> list[str]:
    """The names among `tasks` that are built-in next-line tasks still to be written (not found
    in the index, e.g. a folder named with include_path)."""
    known = set(manager.all_tasks)
    return [t for t in tasks if t not in known and domain_of(t)]


def check_decodes(tasks: list[str], manager: Any, tokenizer: Any) -> None:
    """A generative task needs a tokenizer that turns tokens back into text."""
    if tokenizer.decoder is None and any(
        _output_type(manager, name) == "generate_until" for name in tasks
    ):
        raise EvalInputError(
            "tasks: a generative task needs a tokenizer that decodes, and this one has no decoder"
        )


def _output_type(manager: Any, name: str) -> str | None:
    entry = manager.task_index.get(name)
    config = getattr(entry, "cfg", None) or {}
    return config.get("output_type")
