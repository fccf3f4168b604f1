"""The built-in next-line tasks (`cpt/tasks/next_line.py`): items from the run's held-out
documents, scored by lm-eval's own `hf` model as by ours; `python -m cpt.evaluate` on them and its
bad input."""

from __future__ import annotations

import pytest

pytest.importorskip("lm_eval")


from cpt.tasks.index import task_manager  # noqa: E402

BUILTIN = ["next_line_downstream", "next_line_upstream"]


def test_built_in_tasks_alone_do_not_index_lm_evals_own():
    """A run asking only for next-line tasks skips indexing lm-eval's ~15k task files (seconds
    per process, in every job of a sweep); other task names keep them (the tests above)."""

    manager = task_manager(None, tasks=["next_line_downstream", "next_line_upstream"])
    assert "piqa" not in manager.all_tasks and "arc_easy" not in manager.all_tasks
