"""Every number a user can set is checked before anything is written (cpt/run/build.py): a walk
over every numeric field of every shipped callback and of the config groups a run composes.

Each field gets a value of the wrong sign, zero, infinity and NaN; `build` must refuse it with a
ConfigError naming the key, unless the value is in MEANINGFUL: a decision, stated here and in
docs/validated-inputs.md, that the value means something. A field added later is walked too.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
from omegaconf import DictConfig, ListConfig, OmegaConf

from cpt.config import ConfigError
from cpt.run.build import build

CALLBACKS = "callbacks=[default,replay,stability_gap,task_eval,weight_drift,partial_freeze]"
SETTING = (
    CALLBACKS,
    "callbacks.task_eval.tasks=[next_line_downstream]",
    "callbacks.partial_freeze.half=true",
    "data.train=downstream",
)
BAD = (-1, 0, math.inf, math.nan)
SKIPPED = ("hydra", "dashboard")  # Hydra's own settings; the dashboard command's view names
# values that look wrong and mean something (every other bad value must be refused)
MEANINGFUL = {
    **{
        key: {0}
        for key in (
            "seed",
            "data.split_seed",
            "callbacks.partial_freeze.seed",
            "optim.weight_decay",
            "schedule.warmup",
            "schedule.anneal",
            "callbacks.rewarm.warm_steps",
            "callbacks.replay.fraction",
            "callbacks.replay.start",
            "trainer.limit_val_batches",
            "trainer.gradient_clip_val",
            "trainer.num_sanity_val_steps",
            "data.num_workers",
            "callbacks.task_eval.num_fewshot",
            "schedule.min_lr_ratio",
            "schedule.cooldown",
            "schedule.decay",
            "model.z_loss",
        )
    },  # fmt: skip
    "trainer.num_sanity_val_steps": {-1, 0},  # -1: every validation batch (Lightning's meaning)
    "trainer.devices": {-1},  # Lightning's "every device of the node"
    "callbacks.checkpoint.every_n_train_steps": {0},  # no periodic checkpoint, last.ckpt only
    "callbacks.replay.end": {0},  # with start 0: the end fraction from the first step
}


def numeric_leaves(node: Any, key: str = "") -> list[tuple[str, Any]]:
    found = []
    if isinstance(node, DictConfig):
        for name in node:
            child = f"{key}.{name}" if key else str(name)
            if child.split(".")[0] in SKIPPED or OmegaConf.is_missing(node, name):
                continue
            found += numeric_leaves(node[name], child)
    elif isinstance(node, ListConfig):
        return []
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        found.append((key, node))
    return found


def fields(cfg: DictConfig) -> list[str]:
    return sorted(key for key, _ in numeric_leaves(cfg) if not key.startswith("output"))


def with_value(base: DictConfig, key: str, value: Any) -> DictConfig | None:
    """A copy of the composed config with one value set, as an override sets it; None where the
    schema refuses it already (a typed field)."""
    cfg = copy.deepcopy(base)
    try:
        OmegaConf.update(cfg, key, value, merge=False)
    except Exception:  # noqa: BLE001 (OmegaConf's validation: refused before cpt sees it)
        return None
    return cfg


def test_the_walk_covers_every_callback_and_group(tiny_run):
    keys = fields(tiny_run(*SETTING))
    for group in ("callbacks.stability_gap.", "callbacks.task_eval.", "callbacks.replay.",
                  "callbacks.weight_drift.", "callbacks.throughput.", "callbacks.rewarm.",
                  "optim.", "schedule.", "data.", "trainer."):  # fmt: skip
        assert any(k.startswith(group) for k in keys), group
    assert len(keys) > 40


@pytest.mark.parametrize("value", BAD, ids=["negative", "zero", "inf", "nan"])
def test_every_numeric_field_refuses_a_bad_value_in_one_line(tiny_run, value):
    base, accepted = tiny_run(*SETTING), []
    for key in fields(base):
        if value in MEANINGFUL.get(key, ()):
            continue
        cfg = with_value(base, key, value)
        if cfg is None:
            continue
        try:
            build(cfg)
        except ConfigError as err:
            line = str(err)
            assert "\n" not in line and key.split(".")[-1] in line, (key, line)
            continue
        accepted.append(key)
    assert accepted == []


# free text: paths, names, a document field, a dataset split, a tokenizer file or hub id
FREE_TEXT = ("data.dir", "dirpath", "filename", "output_dir", "save_dir", "logger.csv.name",
             "logger.csv.version", "text_field", ".split", "data.tokenizer")  # fmt: skip


def string_leaves(node: Any, key: str = "") -> list[str]:
    found = []
    if isinstance(node, DictConfig):
        for name in node:
            child = f"{key}.{name}" if key else str(name)
            if child.split(".")[0] not in SKIPPED and not OmegaConf.is_missing(node, name):
                found += string_leaves(node[name], child)
    elif isinstance(node, str) and not key.endswith(FREE_TEXT):
        found.append(key)
    return found


def test_every_option_refuses_a_wrong_one_in_one_line(tiny_run):
    """A setting with a fixed set of options (a schedule, a shape, a policy, a backend, an init,
    a class to instantiate) refuses one it does not know."""
    base = tiny_run(*SETTING)
    keys = string_leaves(base)
    assert {"schedule.name", "model.attention", "callbacks.replay.shape", "init"} <= set(keys)
    accepted = []
    for key in keys:
        cfg = with_value(base, key, "nonsense")
        if cfg is None:
            continue
        try:
            build(cfg)
        except ConfigError as err:
            assert "\n" not in str(err), (key, str(err))
            continue
        accepted.append(key)
    assert accepted == []
