"""`python -m cpt.plan [overrides] [-m]`: see what a run, or every run of a grid, will do.

Takes the overrides `cpt.train` takes (`experiment=...`, and with `-m` the grid of the command line
and of the recipe's `hydra.sweeper.params`), reads no data and loads no weights, prints each run's
plan (`cpt.run.planning`), and writes `plan.json` (one entry per run) and `plan.png` (the LR and the
replay fraction against tokens, one line per run) into the folder named on its last line. Options
of the plan itself: `plan.gpus=8 plan.mfu=0.4 plan.accelerator=H100|H200|A100 plan.peak_tflops=...
plan.dir=...`. One's own configs outside the repository: `hydra.searchpath=[file:///path/to/conf]`
(`cpt/run/user_configs.py`). An invalid config fails as the run would: one line, exit status 2, no plan.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from cpt import config as config_schema
from cpt.errors import UserError, exit_with
from cpt.run.planning import PlanOptions, plan_run
from cpt.run.user_configs import CONF, check_search_path


def jobs(argv: list[str]) -> list[list[str]]:
    """The override lists of every run: one, or with `-m` the grid (as Hydra's basic sweeper
    expands it: the recipe's `hydra.sweeper.params`, then the command line's comma lists)."""
    multirun = any(a in ("-m", "--multirun") for a in argv)
    overrides = [a for a in argv if a not in ("-m", "--multirun")]
    if not multirun:
        return [overrides]
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    given = parser.parse_overrides(overrides)
    fixed = [o.input_line for o in given if not o.is_sweep_override()]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        base = compose("train", overrides=fixed, return_hydra_config=True)
    named = {o.key_or_group for o in given}
    recipe = [
        f"{key}={value}"
        for key, value in (base.hydra.sweeper.params or {}).items()
        if key not in named  # the command line wins over the recipe's grid
    ]
    split = BasicSweeper.split_arguments(parser.parse_overrides(recipe) + given, None)
    return [job for batch in split for job in batch]


def main(argv: list[str], stamp: str) -> int:
    if {"-h", "--help"} & set(argv):
        print(
            f"usage: python -m cpt.plan [overrides] [-m] [plan.<option>=<value> ...]\n\n{__doc__}"
        )
        return 0
    config_schema.register()
    try:
        check_search_path(argv)  # one's own config folder: there, and hiding nothing
        overrides, options = split_options(argv)
        folder = Path(options.dir or f"outputs/plans/{stamp}")
        runs = []
        for n, job in enumerate(jobs(overrides)):
            with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
                cfg = compose("train", overrides=[*job, f"output_dir={folder / str(n)}"])
            runs.append(plan_run(cfg, options, job))
    except (HydraException, OmegaConfBaseException, UserError) as err:
        exit_with(err)
    for n, run in enumerate(runs):
        print(report(run, n, len(runs), options))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plan.json").write_text(json.dumps(runs, indent=1) + "\n")
    plot(runs, folder / "plan.png")
    print(f"plan of {len(runs)} run{'s' * (len(runs) > 1)} written to {folder}")
    return 0


def split_options(argv: list[str]) -> tuple[list[str], PlanOptions]:
    """`plan.<key>=<value>` arguments become PlanOptions; the rest are the run's overrides."""
    types = {f.name: str(f.type) for f in fields(PlanOptions)}
    values: dict[str, Any] = {}
    rest = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not (key.startswith("plan.") and sep):
            rest.append(arg)
            continue
        name = key.removeprefix("plan.")
        if name not in types:
            raise config_schema.ConfigError(
                f"{key}: unknown; expected one of plan.{', plan.'.join(types)}"
            )
        kind = str if "str" in types[name] else int if "int" in types[name] else float
        try:
            values[name] = kind(value)
        except ValueError:
            raise config_schema.ConfigError(f"{key}: {value!r} is not a {kind.__name__}") from None
    return rest, PlanOptions(**values)


def _n(x: float) -> str:
    """A count in a few digits: 2.26M, 300B, 512."""
    for size, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(x) >= size:
            return f"{x / size:.4g}{unit}"
    return f"{x:.4g}"


def _hours(h: float) -> str:
    return f"{h:.1f} h" if h >= 1 else f"{h * 60:.1f} min" if h * 60 >= 1 else f"{h * 3600:.0f} s"


def report(run: dict[str, Any], n: int, total: int, options: PlanOptions) -> str:
    """One run's plan as a few aligned lines."""
    g = run["geometry"]
    accumulation = ", ".join(f"{d}: {a}" for d, a in run["accumulation_by_devices"].items())
    lines = [
        f"== run {n + 1}/{total}: {' '.join(run['overrides']) or '(no overrides)'}",
        f"geometry  {g['global_batch']} x {g['seq_len']} = {run['tokens_per_step']:,} tokens/step, "
        f"{run['total_steps']:,} steps, {_n(run['total_tokens'])} tokens; "
        f"{g['devices']} device(s) x {g['num_nodes']} node(s), accumulation {g['accumulate']} "
        f"(devices: accumulation {accumulation})",
    ]
    for p in run["phases"]:
        steps = f"{p['first_step']:,}-{p['last_step']:,}" if p["steps"] else "(0 steps)"
        lines.append(
            f"schedule  {p['name']:<12} steps {steps:<17} tokens {_n(p['first_token'])}-"
            f"{_n(p['last_token'])}  lr {p['lr_first']:.3g} -> {p['lr_last']:.3g}  "
            + " ".join(f"{k} {_n(v)}" for k, v in p["tokens_per_source"].items())
        )
    total_tokens = sum(run["tokens_per_source"].values()) or 1
    lines.append(
        "data      "
        + "  ".join(
            f"{k} {_n(v)} ({v / total_tokens:.1%})" for k, v in run["tokens_per_source"].items()
        )
    )
    m = run["memory_gib"]
    lines += [
        f"compute   {_n(run['parameters'])} parameters, {_n(run['flops_per_token'])} FLOP/token, "
        f"{run['flops_total']:.3g} FLOPs: {_hours(run['wall_time_h'])} on {run['gpus']} x "
        f"{options.accelerator} ({run['peak_tflops']:g} TFLOP/s) at {run['mfu']:.0%} MFU, "
        f"{run['gpu_hours']:,.1f} GPU-hours",
        f"memory    ~{m['total']:.1f} GiB per GPU (weights {m['weights']:.1f}, gradients "
        f"{m['gradients']:.1f}, optimizer {m['optimizer']:.1f}, activations {m['activations']:.1f})",
        "problems  " + ("; ".join(run["problems"]) or "none seen"),
    ]
    if run["checkpoints"]:
        c = run["checkpoints"]
        lines.insert(
            -1,
            f"disk      {c['saved']} periodic checkpoints, {c['kept']} kept with last.ckpt: "
            f"{c['gb_each']:.3g} GB each, ~{c['gb_total']:.3g} GB",
        )
    return "\n".join(lines)


def plot(runs: list[dict[str, Any]], path: Path) -> Path:
    """The LR (and the replay fraction, where a run replays) against tokens, a line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    replays = any(run["replay_fraction"] for run in runs)
    fig, axes = plt.subplots(1, 1 + replays, figsize=(6 + 5 * replays, 4), squeeze=False)
    for run in runs:
        swept = [o for o in run["overrides"] if not o.startswith(("experiment=", "plan."))]
        label = config_schema.short_dirname(",".join(swept), 60) or "run"
        tokens = [s * run["tokens_per_step"] / 1e9 for s, _ in run["lr"]]
        axes[0][0].plot(tokens, [lr for _, lr in run["lr"]], label=label)
        if run["replay_fraction"]:
            axes[0][1].plot(tokens, [f for _, f in run["replay_fraction"]], label=label)
    axes[0][0].set(xlabel="tokens (B)", ylabel="learning rate", title="schedule")
    if replays:
        axes[0][1].set(xlabel="tokens (B)", ylabel="replay fraction", title="replay")
    if len(runs) <= 12:
        axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], time.strftime("%Y-%m-%d/%H-%M-%S")))
