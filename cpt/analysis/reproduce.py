"""`python scripts/reproduce.py PAPER` (or `python -m cpt.analysis.reproduce PAPER`): a paper's small-scale twin on the built-in corpora (2 cores).

PAPER is gupta2023, ibrahim2024_replay, ibrahim2024_infinite, guo2024 or all.

1. the upstream model: `tiny` pre-trained on python-docs (experiment=demo_pretrain) into
   outputs/upstream, skipped when its checkpoint exists (CPT_UPSTREAM names another checkpoint);
2. the twin's grid (`-m experiment=<paper>_cpu`, two jobs side by side, one core each) and its
   baselines or follow-up tasks;
3. `runs.csv`/`curves.csv` (cpt.analysis.collect), the figures, and `results.md`: one row per run
   (final loss per domain, change from the upstream model, stability-gap peak and recovery) and the
   paper's claims, each with the numbers that bear on it.

    python scripts/reproduce.py gupta2023 [--out outputs/reproduce] [extra overrides]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

from cpt.analysis import plots  # noqa: E402
from cpt.analysis.collect import collect  # noqa: E402

# relative to where it runs, like Hydra's outputs/ and the twins' `init` (conf/scale/cpu.yaml)
UPSTREAM = Path(os.environ.get("CPT_UPSTREAM", "outputs/upstream/checkpoints/last.ckpt"))
ONE_CORE = {**os.environ, "OMP_NUM_THREADS": "1", "CPT_UPSTREAM": str(UPSTREAM)}
COMMON = ["logger=csv", "trainer.enable_progress_bar=false"]


def finished(args: tuple[str, ...] | list[str]) -> bool:
    """Whether the run (or every job of the grid) these arguments name has finished already."""
    for arg in args:
        key, _, folder = arg.partition("=")
        if key == "hydra.run.dir":
            return (Path(folder) / "summary.json").is_file()
        if key == "hydra.sweep.dir":
            jobs = [p.parent.parent for p in Path(folder).glob("*/.hydra/overrides.yaml")]
            return bool(jobs) and all((job / "summary.json").is_file() for job in jobs)
    return False


def train(*args: str, parallel: int = 1) -> None:
    """`python -m cpt.train ARGS`; `-m` grids run `parallel` jobs side by side (joblib)."""
    if finished(args):
        print("== finished already:", " ".join(args), flush=True)
        return
    launcher = (
        ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={parallel}"] if "-m" in args else []
    )
    command = [sys.executable, "-m", "cpt.train", *args, *launcher, *COMMON]
    print("$", " ".join(command[1:]), flush=True)
    subprocess.run(command, env=ONE_CORE if parallel > 1 else {**ONE_CORE, "OMP_NUM_THREADS": "2"})


def run_grid(experiment: str, folder: Path, extra: list[str]) -> None:
    """The `-m` grid of an experiment into `folder`, two jobs side by side."""
    train("-m", f"experiment={experiment}", f"hydra.sweep.dir={folder}", *extra, parallel=2)


def together(*runs: list[str]) -> None:
    """Single runs side by side, one core each."""
    processes = []
    for args in runs:
        if finished(args):
            print("== finished already:", " ".join(args), flush=True)
            continue
        print("$ python -m cpt.train", " ".join(args), flush=True)
        processes.append(
            subprocess.Popen([sys.executable, "-m", "cpt.train", *args, *COMMON], env=ONE_CORE)
        )
    for process in processes:
        process.wait()


REVISIONS = (200, 400, 800)  # the upstream steps kept as checkpoints (gupta2023_revisions_cpu)


def revision(step: int) -> Path:
    return UPSTREAM.parent / f"step{step:07d}.ckpt"


def ensure_upstream() -> None:
    if UPSTREAM.is_file():
        return
    print(f"== the upstream model -> {UPSTREAM.parents[1]}", flush=True)
    train(
        "experiment=demo_pretrain",
        f"hydra.run.dir={UPSTREAM.parents[1]}",
        "callbacks.checkpoint.every_n_train_steps=200",  # its revisions, as Pythia's
    )
    if not UPSTREAM.is_file():
        raise SystemExit(f"reproduce: the upstream run did not write {UPSTREAM}")


# ---- results ------------------------------------------------------------------------------------
def table(runs: list[dict[str, Any]], label: Callable[[dict[str, Any]], str]) -> list[str]:
    rows = [
        "| run | upstream loss (change) | downstream loss (change) | upstream gap peak @ step | recovered at |",
        "|---|---|---|---|---|",
    ]
    for r in runs:
        if r["status"] != "finished":
            rows.append(f"| {label(r)} | {r['status']}: {r.get('error', '')} | | | |")
            continue
        up, down = (
            (r[f"final/val/{d}/loss"], r[f"final/val/{d}/loss"] - r[f"initial/val/{d}/loss"])
            for d in ("upstream", "downstream")
        )
        gap = ""
        if "gap/upstream/peak" in r:
            recovered = r.get("gap/upstream/recovery_step")
            recovered = "never" if recovered in (None, "") else f"{int(recovered)}"
            gap = f"{r['gap/upstream/peak']:.3f} @ {int(r['gap/upstream/peak_step'])} | {recovered}"
        else:
            gap = "| "
        rows.append(
            f"| {label(r)} | {up[0]:.3f} ({up[1]:+.3f}) | {down[0]:.3f} ({down[1]:+.3f}) | {gap} |"
        )
    return rows


def value(r: dict[str, Any], key: str) -> float:
    return float(r[key]) if r.get("status") == "finished" and key in r else float("nan")


def mean(values: list[float]) -> float:
    values = [v for v in values if v == v]
    return sum(values) / len(values) if values else float("nan")


def write(folder: Path, title: str, lines: list[str], started: float) -> None:
    lines += ["", f"Wall time: {time.time() - started:.0f} s on {os.cpu_count()} cores."]
    (folder / "results.md").write_text(f"# {title}\n\n" + "\n".join(lines) + "\n")
    print((folder / "results.md").read_text())


def figures(folder: Path, kinds: list[str]) -> list[str]:
    runs, curves = plots.load(folder)
    made = []
    if "rewarming" in kinds:
        plots.plot_rewarming(runs, curves).savefig(folder / "rewarming.png", dpi=120)
        made.append("rewarming.png")
    if "replay" in kinds:
        plots.plot_replay_frontier(runs).savefig(folder / "replay_frontier.png", dpi=120)
        made.append("replay_frontier.png")
    if "gap" in kinds:
        plots.plot_stability_gap(runs, curves, max_step=300).savefig(
            folder / "stability_gap.png", dpi=120
        )
        made.append("stability_gap.png")
    return made


# ---- the papers ----------------------------------------------------------------------------------
def gupta2023(out: Path, extra: list[str]) -> None:
    started = time.time()
    run_grid("gupta2023_rewarm_cpu", out / "grid", extra)
    train("experiment=gupta2023_constant_cpu", f"hydra.run.dir={out / 'constant'}", *extra)
    have_revisions = all(revision(step).is_file() for step in REVISIONS)
    revisions_dir = out.parent / f"{out.name}_revisions"  # beside: its own table and figures
    if have_revisions:
        run_grid("gupta2023_revisions_cpu", revisions_dir, extra)
    _, _, runs = collect(out)
    made = figures(out, ["rewarming", "gap"])
    grid = [r for r in runs if "optim.max_lr" in r]
    constant = [r for r in runs if "optim.max_lr" not in r]

    def label(r: dict[str, Any]) -> str:
        if r in constant:
            return "constant 2e-4 (no re-warming)"
        return f"max_lr {float(r['optim.max_lr']):g}, warm-up {float(r['schedule.warmup']):.1%}"

    by_lr = {}
    for r in grid:
        by_lr.setdefault(float(r["optim.max_lr"]), []).append(r)
    lines = table(runs, label) + ["", "Per max LR (mean over the four warm-ups):", ""]
    lines += [
        "| max LR | final upstream | final downstream | upstream gap peak - initial | spread of downstream over warm-ups |",
        "|---|---|---|---|---|",
    ]
    for lr, rs in sorted(by_lr.items()):
        downs = [value(r, "final/val/downstream/loss") for r in rs]
        rise = mean([value(r, "gap/upstream/peak") - value(r, "gap/upstream/initial") for r in rs])
        lines.append(
            f"| {lr:g} | {mean([value(r, 'final/val/upstream/loss') for r in rs]):.3f} | {mean(downs):.3f} "
            f"| {rise:+.3f} | {max(downs) - min(downs):.3f} |"
        )
    if constant:
        c = constant[0]
        lines += [
            "",
            f"Constant baseline: upstream {value(c, 'final/val/upstream/loss'):.3f}, downstream "
            f"{value(c, 'final/val/downstream/loss'):.3f}, upstream gap peak - initial "
            f"{value(c, 'gap/upstream/peak') - value(c, 'gap/upstream/initial'):+.3f}.",
        ]
    lines += ["", "Starting from an earlier upstream checkpoint (warm-up 1 %, max LR 2e-3):", ""]
    if have_revisions:
        _, _, revisions = collect(revisions_dir)
        lines += table(
            revisions, lambda r: f"upstream step {str(r.get('init', '')).split('step')[-1][:7]}"
        )
    else:
        lines.append(
            f"not run: the upstream model has no revisions ({revision(REVISIONS[0])} is missing; "
            "remove outputs/upstream to train it again with them)"
        )
    write(
        out,
        "Gupta et al. 2023, small-scale twin",
        lines + ["", "Figures: " + ", ".join(made)],
        started,
    )


def ibrahim2024_replay(out: Path, extra: list[str]) -> None:
    started = time.time()
    run_grid("ibrahim2024_replay_cpu", out / "grid", extra)
    train("experiment=ibrahim2024_union_cpu", f"hydra.run.dir={out / 'union'}", *extra)
    collect(out / "grid")  # the frontier and the gap curves: the replay grid alone
    made = figures(out / "grid", ["replay", "gap"])
    _, _, runs = collect(out)
    grid = [r for r in runs if "callbacks.replay.fraction" in r]

    def label(r: dict[str, Any]) -> str:
        if r not in grid:
            return "union 50/50 from scratch (1100 steps)"
        return f"replay {float(r['callbacks.replay.fraction']):.1%}"

    lines = table(runs, label)
    write(
        out,
        "Ibrahim et al. 2024 (replay), small-scale twin",
        lines + ["", "Figures: grid/" + ", grid/".join(made)],
        started,
    )


def ibrahim2024_infinite(out: Path, extra: list[str]) -> None:
    started = time.time()
    exp, nxt = "experiment=ibrahim2024_infinite_cpu", "experiment=ibrahim2024_infinite_next_cpu"
    cosine = ["schedule=cosine", "schedule.warmup=0.01", "schedule.min_lr_ratio=0.1"]
    ckpt = "checkpoints/last.ckpt"
    together(
        [exp, "schedule.anneal=0.0", f"hydra.run.dir={out / 'task1_infinite'}", *extra],
        [exp, *cosine, f"hydra.run.dir={out / 'task1_cosine'}", *extra],
    )
    together(
        [exp, "schedule.anneal=0.15", f"hydra.run.dir={out / 'task1_infinite_annealed'}", *extra],
        [
            nxt,
            f"init=ckpt:{out / 'task1_infinite' / ckpt}",
            "schedule.anneal=0.0",
            f"hydra.run.dir={out / 'task2_infinite'}",
            *extra,
        ],
    )
    together(
        [
            nxt,
            f"init=ckpt:{out / 'task1_infinite' / ckpt}",
            "schedule.anneal=0.15",
            f"hydra.run.dir={out / 'task2_infinite_annealed'}",
            *extra,
        ],
        [
            nxt,
            f"init=ckpt:{out / 'task1_cosine' / ckpt}",
            *cosine,
            "optim.max_lr=2e-3",
            "callbacks.rewarm.optimizer_state=fresh",
            f"hydra.run.dir={out / 'task2_cosine'}",
            *extra,
        ],
    )
    _, _, runs = collect(out)
    made = figures(out, ["gap"])
    names = {
        "task1_infinite": "task 1 (code), infinite, constant to the end",
        "task1_infinite_annealed": "task 1 (code), infinite, annealed over the last 15 %",
        "task1_cosine": "task 1 (code), cosine re-warm + re-decay",
        "task2_infinite": "task 2 (docs) from task 1 constant: constant carried, no re-warm",
        "task2_infinite_annealed": "task 2 (docs) from task 1 constant: constant, annealed at the end",
        "task2_cosine": "task 2 (docs) from task 1 cosine: re-warm + re-decay again",
    }
    order = sorted(
        runs,
        key=lambda r: (
            list(names).index(Path(r["run"]).name) if Path(r["run"]).name in names else 99
        ),
    )
    lines = table(order, lambda r: names.get(Path(r["run"]).name, r["run"]))
    write(
        out,
        "Ibrahim et al. 2024 (infinite schedule), small-scale twin",
        lines + ["", "Figures: " + ", ".join(made)],
        started,
    )


def guo2024(out: Path, extra: list[str]) -> None:
    started = time.time()
    run_grid("guo2024_stability_gap_cpu", out / "grid", extra)
    _, _, runs = collect(out / "grid")
    made = figures(out / "grid", ["gap"])
    lines = table(runs, lambda r: f"mitigation: {r.get('mitigation', '?')}")
    lines += [
        "",
        "| mitigation | downstream gap peak - initial | downstream recovered at | upstream gap area |",
        "|---|---|---|---|",
    ]
    for r in runs:
        rise = value(r, "gap/downstream/peak") - value(r, "gap/downstream/initial")
        recovered = r.get("gap/downstream/recovery_step")
        lines.append(
            f"| {r.get('mitigation')} | {rise:+.3f} | {'never' if recovered in (None, '') else int(recovered)} "
            f"| {value(r, 'gap/upstream/area'):.1f} |"
        )
    write(
        out,
        "Guo et al. 2024, small-scale twin",
        lines + ["", "Figures: grid/" + ", grid/".join(made)],
        started,
    )


PAPERS = {
    "gupta2023": gupta2023,
    "ibrahim2024_replay": ibrahim2024_replay,
    "ibrahim2024_infinite": ibrahim2024_infinite,
    "guo2024": guo2024,
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("paper", choices=[*PAPERS, "all"])
    parser.add_argument("--out", default="outputs/reproduce")
    args, extra = parser.parse_known_args()
    ensure_upstream()
    for name in PAPERS if args.paper == "all" else [args.paper]:
        print(f"== {name}", flush=True)
        PAPERS[name](Path(args.out) / name, extra)


if __name__ == "__main__":
    main()
