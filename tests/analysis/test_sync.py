"""A real multirun grid: joblib launcher, wandb offline per job, collection, and the notebooks."""

from __future__ import annotations

from pathlib import Path

import pytest

from cpt.analysis.sync import main as sync_main
from cpt.analysis.wandb_files import offline_runs

REPO = Path(__file__).resolve().parents[2]


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
