"""A real multirun grid: joblib launcher, wandb offline per job, collection, and the notebooks."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from cpt.analysis.collect import collect, collect_wandb
from cpt.analysis.collect import main as collect_main
from cpt.analysis.wandb_files import offline_runs, read_run

REPO = Path(__file__).resolve().parents[2]

COLUMN = "final/val/downstream/loss"


def test_collect_lists_every_job_with_overrides_and_metrics(sweep):
    runs_csv, curves_csv, rows = collect(sweep)
    runs = pd.read_csv(runs_csv)
    assert len(runs) == 4 and sorted(runs["status"]) == ["failed", "failed", "finished", "finished"]
    assert set(runs["callbacks.replay.fraction"]) == {0.0, 0.5}
    finished = runs[runs["status"] == "finished"]
    assert set(finished["optim.max_lr"]) == {1e-3}
    assert (
        finished["final/val/upstream/loss"].notna().all()
        and finished["gap/upstream/peak"].notna().all()
    )
    failed = runs[runs["status"] == "failed"]
    assert failed["error"].str.contains("optim.max_lr").all()
    assert all(str(r).split("_", 1)[1] for r in runs["run"])  # folders named from the overrides
    curves = pd.read_csv(curves_csv)
    assert set(curves.columns) == {"run", "step", "tokens", "domain", "metric", "value"}
    assert {"loss", "ppl", "gap_loss", "train_loss"} <= set(curves["metric"])


class RecordedRun:
    """A run as `wandb.Api().runs()` returns it: nested config, summary, history."""

    def __init__(self, record: dict) -> None:
        self.name, self.state = record["name"], record["state"]
        self.config, self.summary = record["config"], record["summary"]
        self._history = record["history"]

    def scan_history(self):
        return iter(self._history)


class RecordedApi:
    def __init__(self, records: list[dict] | Exception) -> None:
        self.records, self.asked = records, []

    def runs(self, path: str, filters: dict):
        self.asked.append((path, filters))
        if isinstance(self.records, Exception):
            raise self.records
        return [RecordedRun(r) for r in self.records if r["group"] == filters["group"]]


def _recorded(sweep: Path) -> list[dict]:
    """What the API returns for the sweep once synced, recorded from the runs' own files (and
    through JSON, as it travels)."""
    records = []
    for folder in offline_runs(sweep):
        run = read_run(folder)
        state = "finished" if run.exit_code == 0 else "failed"
        records.append(
            dict(
                name=run.name,
                group=run.group,
                state=state,
                config=run.config,
                summary=run.summary,
                history=run.history,
            )
        )
    return json.loads(json.dumps(records))


def test_collect_from_wandb_equals_the_local_collection(sweep, tmp_path):
    local_runs, local_curves, _ = collect(sweep, tmp_path / "local")
    api = RecordedApi(_recorded(sweep))
    remote_runs, remote_curves, _ = collect_wandb(f"me/cpt/{sweep.name}", tmp_path / "remote", api)
    assert api.asked == [("me/cpt", {"group": sweep.name})]
    mine = pd.read_csv(local_runs)
    mine = mine[mine["status"] == "finished"].drop(columns=["error"]).reset_index(drop=True)
    theirs = pd.read_csv(remote_runs)  # the jobs refused before training never reach wandb
    pd.testing.assert_frame_equal(mine, theirs, check_dtype=False)  # the failed rows made NaNs
    local, remote = pd.read_csv(local_curves), pd.read_csv(remote_curves)
    local = local[local["run"].isin(theirs["run"])].reset_index(drop=True)
    pd.testing.assert_frame_equal(local, remote)
    assert len(remote) > 20


@pytest.mark.parametrize(
    ("target", "api", "line"),
    [
        ("me/cpt", None, "error: --wandb: expected entity/project/group, got 'me/cpt'"),
        ("me/cpt/nothing", [], "error: --wandb: group 'nothing' of me/cpt has no runs"),
        ("me/none/g", ValueError("Could not find project none"), "error: --wandb: project me/none"),
        ("me/cpt/g", "nokey", "error: --wandb: no wandb API key; set WANDB_API_KEY"),
    ],
)
def test_bad_wandb_collection_is_one_line(target, api, line, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: no key
    if api != "nokey":
        from cpt.analysis import collect as module

        monkeypatch.setattr(module, "_api", lambda: RecordedApi(api or []))
    with pytest.raises(SystemExit) as exit_:
        collect_main(["--wandb", target, "--out", str(tmp_path / "out")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(line) and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_task_curves_join_the_curve_table_for_the_task_figure():
    from cpt.analysis.collect import curves_from_records

    records = [
        {"step": "0", "train/tokens": "0", "task/next_line_downstream/acc_norm": "0.40"},
        {"step": "5", "train/tokens": "10240", "task/next_line_downstream/acc_norm": "0.31"},
    ]
    rows = curves_from_records(records, "run")
    assert [(r["domain"], r["metric"], r["step"], r["value"]) for r in rows] == [
        ("next_line_downstream", "task_acc_norm", 0, 0.40),
        ("next_line_downstream", "task_acc_norm", 5, 0.31),
    ]
