"""A real multirun grid: joblib launcher, wandb offline per job, collection, and the notebooks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from cpt.analysis import dashboard
from cpt.analysis.collect import collect, collect_wandb
from cpt.analysis.collect import main as collect_main
from cpt.analysis.notebooks import NOTEBOOKS, execute
from cpt.analysis.sync import main as sync_main
from cpt.analysis.wandb_files import offline_runs, read_run
from tests.conftest import SMALL_DATA

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, data_dir) -> Path:
    """2 max LRs x 2 replay fractions, one max LR invalid: 2 jobs finish, 2 fail."""
    folder = tmp_path_factory.mktemp("sweep") / "grid"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cpt.train",
            "-m",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            f"hydra.sweep.dir={folder}",
            "debug=fast",
            "logger=wandb",
            f"data.dir={data_dir}",
            *SMALL_DATA,
            "data.train=downstream",
            "callbacks=[cpt,task_eval]",
            "callbacks.stability_gap.batches=1",
            "callbacks.task_eval.tasks=[next_line_downstream]",
            "callbacks.task_eval.limit=8",
            "callbacks.task_eval.dense=[[2,1]]",
            "trainer.max_steps=4",
            "optim.max_lr=1e-3,-1",
            "callbacks.replay.fraction=0.0,0.5",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**__import__("os").environ, "WANDB_MODE": "offline"},
    )
    assert result.returncode != 0  # Hydra reports the failed jobs at the end
    assert "optim.max_lr: expected a positive learning rate" in result.stderr + result.stdout
    return folder


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


def test_wandb_offline_run_per_job_grouped_by_sweep(sweep):
    finished = [p.parent for p in sweep.glob("*/summary.json")]
    assert len(finished) == 2
    for job in finished:
        runs = list((job / "wandb").glob("offline-run-*"))
        assert len(runs) == 1 and len(list(runs[0].glob("*.wandb"))) == 1
        record = next(runs[0].glob("*.wandb")).read_bytes()
        assert sweep.name.encode() in record  # group: the sweep folder's name
        assert b"max_lr=0.001" in record  # name and tags: the job's overrides


SWEPT = {"max_lr", "fraction"}


def test_job_names_hold_only_what_the_sweep_varies(sweep):
    """Folder and wandb run name: `<n>_max_lr=...,fraction=...`; the overrides every job shares
    (data, steps, callbacks) stay out of it, in the config and the tags."""
    jobs = sorted(p.parent.parent for p in sweep.glob("*/.hydra/overrides.yaml"))
    assert len(jobs) == 4
    for job in jobs:
        number, _, name = job.name.partition("_")
        assert number.isdigit() and {item.split("=")[0] for item in name.split(",")} == SWEPT
    for folder in offline_runs(sweep):
        run = read_run(folder)
        job = folder.parent.parent
        assert run.name == job.name and run.group == sweep.name
        assert "data.domains.upstream.max_docs=40" in run.tags and "trainer.max_steps=4" in run.tags


def test_offline_runs_hold_the_flat_summary_and_the_overrides(sweep):
    """Read from the run's own files: every summary.json number under the tidy table's column
    name, and every override as a top-level config key beside the nested config."""
    from cpt.columns import summary_columns

    runs = offline_runs(sweep)
    assert len(runs) == 2
    for folder in runs:
        run = read_run(folder)
        summary = json.loads((folder.parent.parent / "summary.json").read_text())
        flat = summary_columns(summary)
        for key in (
            "final/val/upstream/loss",
            "initial/val/upstream/loss",
            "forgetting/upstream",
            "gap/upstream/peak",
            "gap/upstream/recovery_step",
            "gap/upstream/area",
            "tokens/downstream",
            "final/task/next_line_downstream/acc_norm",
        ):
            want = flat[key]  # a gap that never recovered is None in both
            assert run.summary[key] == (want if want is None else pytest.approx(want)), key
        assert run.summary["forgetting/upstream"] == pytest.approx(
            summary["final_val_loss"]["upstream"] - summary["initial_val_loss"]["upstream"]
        )
        assert run.config["optim.max_lr"] == 0.001 == run.config["optim"]["max_lr"]
        assert run.config["callbacks.replay.fraction"] in (0.0, 0.5)
        assert "trainer.max_steps=4" in run.config["overrides"]
        assert run.exit_code == 0


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


def test_sync_lists_each_run_and_what_was_already_synced(sweep, capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    first, second = offline_runs(sweep)
    marker = next(first.glob("run-*.wandb"))
    marker = marker.with_name(marker.name + ".synced")
    marker.touch()
    try:
        sync_main([str(sweep), "--dry-run"])
        out = capsys.readouterr().out.splitlines()
        assert f"{first.parent.parent.name}: already synced" in out
        assert f"{second.parent.parent.name}: to sync" in out
        with pytest.raises(SystemExit) as exit_:
            sync_main([str(sweep)])  # no key: nothing is uploaded
        assert exit_.value.code == 2
        assert capsys.readouterr().err.startswith("error: no wandb API key")
        with pytest.raises(SystemExit):
            sync_main([str(tmp_path)])
        assert "no offline wandb run in it" in capsys.readouterr().err
    finally:
        marker.unlink()


@pytest.mark.parametrize("notebook", ["rewarming", "replay", "stability_gap"])
def test_notebooks_run_headless_on_the_table(sweep, notebook, tmp_path):
    collect(sweep)
    executed = execute(NOTEBOOKS / f"{notebook}.ipynb", sweep, out=tmp_path / f"{notebook}.ipynb")
    assert executed.is_file()
    figure = {
        "rewarming": "rewarming.png",
        "replay": "replay_frontier.png",
        "stability_gap": "stability_gap.png",
    }
    assert (sweep / figure[notebook]).stat().st_size > 5_000


def test_the_figures_draw_the_collected_numbers(sweep):
    """What the notebooks plot is the table's data: one point per finished run on the frontier,
    one line per finished run and domain with that run's curve."""
    from cpt.analysis import plots

    collect(sweep)
    runs, curves = plots.load(sweep)
    finished = runs[runs["status"] == "finished"]
    frontier = plots.plot_replay_frontier(runs).axes[0]
    drawn = {tuple(p) for line in frontier.lines for p in line.get_xydata().tolist()}
    assert drawn == set(
        zip(
            finished["final/val/upstream/loss"].tolist(),
            finished["final/val/downstream/loss"].tolist(),
        )
    )
    rewarming = plots.plot_rewarming(runs, curves)
    for ax, domain in zip(rewarming.axes, ("upstream", "downstream")):
        assert len(ax.lines) == len(finished)
        for line, (_, row) in zip(ax.lines, finished.iterrows()):
            want = curves[
                (curves["run"] == row["run"])
                & (curves["domain"] == domain)
                & (curves["metric"] == "loss")
            ]
            assert line.get_ydata().tolist() == want["value"].tolist()
            assert line.get_xdata().tolist() == want["tokens"].tolist()


def test_every_line_is_labelled_by_every_key_the_sweep_varies(sweep):
    """Labels come from the sweep's own overrides: both swept keys, though only one differs
    between the finished runs (the invalid max LR never trained)."""
    from cpt.analysis import plots

    collect(sweep)
    runs, curves = plots.load(sweep)
    assert plots.swept(runs) == ["callbacks.replay.fraction", "optim.max_lr"]
    figure = plots.plot_rewarming(runs, curves)
    labels = [line.get_label() for line in figure.axes[0].lines]
    assert len(labels) == 2 and len(set(labels)) == 2
    assert all("fraction=" in label and "max_lr=" in label for label in labels)


def test_committed_notebooks_have_no_outputs():
    import nbformat

    for path in NOTEBOOKS.glob("*.ipynb"):
        nb = nbformat.read(str(path), as_version=4)
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), path
