"""Mixtures in real training runs: per-source logging, exact resume, replay of seen windows."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir

from cpt.checkpoints.files import read_lightning_checkpoint
from cpt.config import ConfigError
from cpt.data.prepare import PrepareConfig, run_prepare
from cpt.data.sources import SourceError
from cpt.train import run
from tests.conftest import CONF

REPLAY = ["data.mixture={downstream: 0.75, upstream: 0.25}"]


def rows(out: str) -> list[dict[str, str]]:
    with (Path(out) / "metrics.csv").open() as handle:
        return list(csv.DictReader(handle))


def train_losses(out: str) -> dict[int, float]:
    return {int(r["step"]): float(r["train/loss"]) for r in rows(out) if r["train/loss"]}


def test_replay_logs_each_source_and_counts_tokens_exactly(tiny_run):
    cfg = tiny_run(*REPLAY, "trainer.max_steps=4")
    summary = run(cfg)
    assert summary["mixture"] == {"downstream": 0.75, "upstream": 0.25}
    assert summary["tokens_per_source"] == {"downstream": 12 * 32, "upstream": 4 * 32}
    columns = set(rows(cfg.output_dir)[0])
    assert {"train/upstream/loss", "train/downstream/loss", "train/upstream/tokens"} <= columns
    tokens = [
        float(r["train/upstream/tokens"])
        for r in rows(cfg.output_dir)
        if r["train/upstream/tokens"]
    ]
    assert tokens[-1] == 4 * 32


def test_replay_at_zero_trains_exactly_as_no_replay(tiny_run):
    """The replay twin's 0 % arm is Gupta's paper-setting arm: the same weights to the bit, so
    `make reproduce` trains it once (cpt/reproduce/twins.py)."""
    common = ("data.train=downstream", "trainer.max_steps=3")
    plain = tiny_run(*common, "callbacks=gap", out="plain")
    zero = tiny_run(*common, "callbacks=cpt", "callbacks.replay.fraction=0.0", out="zero")
    run(plain), run(zero)

    def final(cfg):
        return read_lightning_checkpoint(Path(cfg.output_dir) / "checkpoints" / "last.ckpt")

    a, b = final(plain)["state_dict"], final(zero)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_gives_the_identical_continuation(tiny_run):
    straight = tiny_run(
        *REPLAY, "trainer.max_steps=6", "callbacks.checkpoint.every_n_train_steps=3", out="straight"
    )
    run(straight)
    middle = Path(straight.output_dir) / "checkpoints" / "step0000003.ckpt"
    assert read_lightning_checkpoint(middle)["CPTDataModule"]["step"] == 3
    resumed = tiny_run(*REPLAY, "trainer.max_steps=6", f"resume={middle}", out="resumed")
    run(resumed)
    a, b = train_losses(straight.output_dir), train_losses(resumed.output_dir)
    assert len(b) == 3 and all(a[step] == b[step] for step in b)  # bitwise, on CPU

    def final(out):
        return read_lightning_checkpoint(Path(out) / "checkpoints" / "last.ckpt")["state_dict"]

    assert all(
        torch.equal(final(straight.output_dir)[k], v) for k, v in final(resumed.output_dir).items()
    )


def test_replay_restricted_to_windows_an_earlier_run_saw(tiny_run):
    upstream = tiny_run("data.train=upstream", "trainer.max_steps=2", out="pre")
    run(upstream)
    last = Path(upstream.output_dir) / "checkpoints" / "last.ckpt"
    cpt = tiny_run(*REPLAY, f"init=ckpt:{last}", f"data.domains.upstream.seen_by={last}", out="cpt")
    run(cpt)  # trains; the restriction itself is checked on the datamodule below
    from cpt.data.datamodule import CPTDataModule
    from cpt.run.build import build

    cpt.overwrite = True  # only built again, to read the datamodule: nothing is trained
    built = build(cpt)
    dm = CPTDataModule(built.config.data, built.geometry, cpt.seed, built.seen)
    dm.setup()
    allowed = dm.mixture.sources[1].allowed
    assert len(allowed) == 2 * 4  # two steps of four upstream windows
    again = upstream.copy()
    again.overwrite = True  # only built, to read its geometry: nothing is trained or written
    before = build(again)
    pre = CPTDataModule(before.config.data, before.geometry, upstream.seed)
    pre.setup()
    assert set(allowed.tolist()) == set(pre.mixture.seen_windows(0, 2).tolist())


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "data.mixture={downstream: 1.0, upstream: -0.1}",
            "data.mixture.upstream: expected a weight >= 0",
        ),
        ("data.mixture={downstream: 0, upstream: 0}", "data.mixture: all weights are zero"),
        ("data.mixture={code: 1.0}", "data.mixture.code: not a domain"),
        (
            "data.mixture={downstream: lots}",
            "data.mixture.downstream: expected a weight >= 0, got .lots.",
        ),
        (
            "data.domains.upstream.max_tokens=8",
            "data.domains.upstream.max_tokens: expected at least seq_len",
        ),
        (
            "data.domains.upstream.part=[2,2]",
            r"data.domains.upstream.part: expected \[k, n\] with n >= 2 and 0 <= k < n",
        ),
    ],
)
def test_bad_mixtures(tiny_run, override, message):
    with pytest.raises(ConfigError, match=f"^{message}"):
        run(tiny_run(override))


def test_capped_sub_corpus_for_several_epochs(tiny_run):
    cfg = tiny_run(
        "data.domains.upstream.max_tokens=96", "data.train=upstream", "trainer.max_steps=3"
    )
    summary = run(cfg)  # 3 windows of 32 tokens, 4 per batch: every window seen 4 times
    assert summary["tokens_per_source"] == {"upstream": 12 * 32}


def test_two_runs_on_the_two_parts_of_a_corpus_train_on_disjoint_halves(tiny_run):
    """A task sequence cut from one corpus (Ibrahim et al.'s IID tasks): `part=[0,2]` and
    `part=[1,2]` draw disjoint windows, together all of them, whatever each run's seed."""
    from cpt.data.datamodule import CPTDataModule
    from cpt.run.build import build

    drawn = []
    for k, seed in ((0, 1), (1, 2)):
        cfg = tiny_run(
            "data.train=upstream", f"data.domains.upstream.part=[{k},2]", f"seed={seed}",
            "trainer.max_steps=40", out=f"part{k}",
        )  # fmt: skip
        built = build(cfg)
        data = CPTDataModule(built.config.data, built.geometry, cfg.seed)
        data.prepare_data()
        data.setup()
        total = data.mixture.sources[0].num_windows
        steps = total // data.mixture.global_batch + 1  # more draws than a part holds
        drawn.append(set(data.mixture.seen_windows(0, steps).tolist()))
    assert drawn[0] and drawn[1] and not drawn[0] & drawn[1]
    assert drawn[0] | drawn[1] == set(range(total))


def test_prepare_command_in_parts(data_dir, tmp_path, capsys):
    def compose_prepare(*overrides):
        from hydra.core.config_store import ConfigStore

        ConfigStore.instance().store(name="prepare_schema", node=PrepareConfig)
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose("prepare", overrides=[f"data.dir={tmp_path / 'd'}", *overrides])

    sources = tmp_path / "corpus"
    sources.mkdir()
    for i in range(3):
        (sources / f"{i}.jsonl").write_text(
            "".join(json.dumps({"text": f"doc {i} {j} " * 9}) + "\n" for j in range(5))
        )
    common = [
        "data=jsonl",
        f"data.domains.downstream.source={sources}/*.jsonl",
        "data.domains.downstream.val_tokens=30",
        "data.tokenizer=bpe:300",
        "num_parts=3",
    ]
    for part in range(3):
        run_prepare(compose_prepare(*common, f"part={part}"))
    done = run_prepare(compose_prepare(*common, "finalize=true"))
    assert not list(done["downstream"].path.parent.glob("*.parts"))
    assert (
        done["downstream"].meta["splits"]["train"]["documents"]
        + done["downstream"].meta["splits"]["val"]["documents"]
        == 15
    )
    assert "downstream:" in capsys.readouterr().out
    with pytest.raises(SourceError, match=r"part: 3 is not in \[0, num_parts=3\)"):
        run_prepare(compose_prepare(*common, "part=3"))


class DrawnWindows(L.Callback):
    """Records the (source, window) of every window a run actually trains on."""

    def __init__(self) -> None:
        self.pairs: set[tuple[str, int]] = set()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        names = trainer.datamodule.mixture.names
        for source, window in zip(batch["source"].tolist(), batch["window"].tolist()):
            self.pairs.add((names[source], window))


def test_seen_by_replays_exactly_what_a_replaying_run_drew(tiny_run):
    """The upstream run's replay share came from the Replay callback, not from its mixture weights."""
    from cpt.data.datamodule import CPTDataModule
    from cpt.run.build import build

    upstream = tiny_run(
        "data.train=downstream",
        "callbacks=cpt",
        "callbacks.replay.fraction=0.25",
        "trainer.max_steps=6",
        out="pre",
    )
    built, drawn = build(upstream), DrawnWindows()
    built.callbacks.append(drawn)
    run(upstream, built)
    upstream_windows = {w for source, w in drawn.pairs if source == "upstream"}
    assert len(upstream_windows) == 6  # one window of four per step

    last = Path(upstream.output_dir) / "checkpoints" / "last.ckpt"
    cpt = tiny_run(
        "data.mixture={downstream: 0.5, upstream: 0.5}",
        f"init=ckpt:{last}",
        f"data.domains.upstream.seen_by={last}",
        "trainer.max_steps=6",
        out="cpt",
    )
    built, replayed = build(cpt), DrawnWindows()
    built.callbacks.append(replayed)
    run(cpt, built)
    assert {w for source, w in replayed.pairs if source == "upstream"} <= upstream_windows
    cpt.overwrite = True  # built again only to read the restriction it trained under
    again = build(cpt)
    data = CPTDataModule(again.config.data, again.geometry, cpt.seed, again.seen)
    data.setup()
    assert set(data.mixture.sources[1].allowed.tolist()) == upstream_windows


def test_seen_by_a_run_that_drew_nothing_of_the_source_is_one_line(tiny_run):
    upstream = tiny_run(
        "data.train=downstream", "callbacks=cpt", "callbacks.replay.fraction=0", out="pre"
    )
    run(upstream)
    last = Path(upstream.output_dir) / "checkpoints" / "last.ckpt"
    cpt = tiny_run(
        "data.mixture={downstream: 0.5, upstream: 0.5}",
        f"data.domains.upstream.seen_by={last}",
        out="cpt",
    )
    with pytest.raises(SourceError, match="^data.domains.upstream.seen_by: that run drew no"):
        run(cpt)


def test_the_held_out_documents_do_not_depend_on_the_run_seed(tiny_run):
    upstream = tiny_run("data.train=upstream", "trainer.max_steps=2", out="pre")
    before = run(upstream)["final_val_loss"]
    last = Path(upstream.output_dir) / "checkpoints" / "last.ckpt"
    cpt = tiny_run("seed=1", f"init=ckpt:{last}", "data.train=downstream", out="cpt")
    after = run(cpt)["initial_val_loss"]  # the same weights on the same held-out documents
    assert after == pytest.approx(before, rel=1e-6)

    other = tiny_run("data.split_seed=7", f"init=ckpt:{last}", "data.train=downstream", out="x")
    with pytest.raises(
        SourceError, match="^data.domains.upstream: its held-out documents are split otherwise"
    ):
        run(other)
    assert not Path(other.output_dir).exists()
