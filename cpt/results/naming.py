"""Names of runs made of what varies: a sweep job's folder and its wandb run name.

A multirun's jobs share most overrides (the data, the starting checkpoint, the step budget); what
tells them apart is the keys the sweep varies. Hydra's sweeper writes the sweep's own overrides
and `hydra.sweeper.params` into `<sweep dir>/multirun.yaml` before it launches any job; the keys
Hydra's override parser calls sweeps there (`a,b`, `range(...)`, `choice(...)`) name the job:
`3_max_lr=0.002,fraction=0.25`. The shared overrides stay in the config, the tags and the group.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import yaml


def items(override_dirname: str) -> list[str]:
    """The `key=value` items of Hydra's `override_dirname`, split at the commas between them: not
    at those inside a quoted value or a list or dict (`reference='ckpt:/runs/0_a=1,b=2/last.ckpt'`)."""
    found, depth, quote, start = [], 0, "", 0
    for i, char in enumerate(override_dirname):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        elif char == "," and depth == 0:
            found.append(override_dirname[start:i])
            start = i + 1
    found.append(override_dirname[start:])
    return [item for item in found if item]


def short_dirname(override_dirname: str, limit: int = 120) -> str:
    """A job folder name from its overrides: last key component only, at most `limit` characters.

    `optim.max_lr=0.0003,callbacks.replay.fraction=0.05` -> `max_lr=0.0003,fraction=0.05`; a longer
    name is cut and ends with a hash of the whole, so two jobs never share a folder.
    """
    parts = []
    for item in items(override_dirname):
        key, sep, value = item.partition("=")
        parts.append(f"{key.rsplit('.', 1)[-1]}{sep}{value}" if sep else item)
    name = ",".join(parts).replace("/", "-").replace("\\", "")
    if len(name) <= limit:
        return name
    return f"{name[: limit - 9]}~{hashlib.sha1(override_dirname.encode()).hexdigest()[:8]}"


@functools.lru_cache(maxsize=8)
def swept_keys(sweep_dir: str) -> frozenset[str] | None:
    """The keys a sweep varies, from its `multirun.yaml`; None when there is none to read."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    path = Path(sweep_dir) / "multirun.yaml"
    if not path.is_file():
        return None
    hydra = (yaml.safe_load(path.read_text()) or {}).get("hydra", {})
    task = list((hydra.get("overrides") or {}).get("task") or [])
    params = (hydra.get("sweeper") or {}).get("params") or {}
    task += [f"{key}={value}" for key, value in params.items()]
    parsed = OverridesParser.create().parse_overrides(task)
    return frozenset(o.get_key_element().lstrip("+~") for o in parsed if o.is_sweep_override())


def varying(override_dirname: str, swept: frozenset[str] | None) -> str:
    """The items of `override_dirname` whose key the sweep varies (all of them when unknown)."""
    if swept is None:
        return override_dirname
    kept = [i for i in items(override_dirname) if i.partition("=")[0].lstrip("+~") in swept]
    return ",".join(kept)


def job_name(num: int | str, override_dirname: str, sweep_dir: str) -> str:
    """`<num>_<what varies>`, or `<num>` when nothing does (the `hydra.sweep.subdir`)."""
    name = short_dirname(varying(override_dirname, swept_keys(str(sweep_dir))))
    return f"{num}_{name}" if name else str(num)
