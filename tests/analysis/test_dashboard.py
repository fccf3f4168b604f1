"""A real multirun grid: joblib launcher, wandb offline per job, collection, and the notebooks."""

from __future__ import annotations

from pathlib import Path

import pytest

from cpt.analysis import dashboard
from cpt.analysis.wandb_files import offline_runs, read_run

REPO = Path(__file__).resolve().parents[2]


def _nested(config: dict, dotted: str) -> bool:
    node = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def test_dashboard_panels_name_only_what_a_real_run_logs(sweep):
    """Built offline from the sweep folder: every panel's history key, summary key and config key
    is one the sweep's real runs wrote to wandb."""
    import re

    spec = dashboard.sweep_from_folder(sweep)
    assert spec.swept == ["callbacks.replay.fraction", "optim.max_lr"]
    assert spec.domains == ["upstream", "downstream"] and spec.tasks == ["next_line_downstream"]
    workspace = dashboard.build("me", "cpt", spec)
    assert [s.name for s in workspace.sections] == [
        "loss against tokens",
        "forgetting against adaptation",
        "stability gap",
        "tasks",
        "training health",
        "runs",
    ]
    runs = [read_run(f) for f in offline_runs(sweep)]
    history = {key for run in runs for row in run.history for key in row}
    summary = {key for run in runs for key in run.summary}
    refs = dashboard.references(workspace)
    assert {kind for kind, _ in refs} == {"history", "regex", "summary", "config"}
    for kind, key in refs:
        if kind == "history":
            assert key in history, key
        elif kind == "regex":
            assert any(re.fullmatch(key, k) for k in history), key
        elif kind == "summary":
            assert key in summary, key
        else:
            assert all(_nested(run.config, key) for run in runs), key


def test_a_recipe_names_its_views_and_bad_dashboard_input_is_one_line(sweep, capsys, tmp_path):
    from tests.conftest import compose_train

    assert compose_train(["experiment=ibrahim2024_replay"]).dashboard.views[0] == "frontier"
    dashboard.main(["me/cpt", "--group", sweep.name, "--from", str(sweep), "--dry-run"])
    out = capsys.readouterr().out
    assert "stability gap: 2 panels" in out and "dry run: nothing saved" in out
    empty = tmp_path / "empty"
    empty.mkdir()
    for args, line in [
        (
            ["mecpt", "--group", "g", "--from", str(sweep)],
            "error: project: expected entity/project",
        ),
        (["me/cpt", "--group", "g", "--from", str(empty)], "error: --from: "),
        (
            ["me/cpt", "--group", "g", "--from", str(sweep), "--views", "loss,pie"],
            "error: --views: unknown view 'pie'",
        ),
    ]:
        with pytest.raises(SystemExit) as exit_:
            dashboard.main([*args, "--dry-run"])
        assert exit_.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(line) and "\n" not in err
