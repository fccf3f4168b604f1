"""`python scripts/reproduce.py PAPER` (or `make reproduce PAPER=...`): a paper's small-scale twin on
the built-in corpora, three seeds per grid point, on a strong and a weak shift, with verdicts.

PAPER is gupta2023, guo2024, ibrahim2024_infinite, ibrahim2024_replay or all (in that order: the
union baseline, the longest runs, last).

1. the upstream model: `tiny` pre-trained on package-docs (experiment=twin_upstream) into
   outputs/twin-upstream with checkpoints every 750 steps (its revisions), skipped when its
   checkpoint exists (CPT_UPSTREAM names another run folder);
2. the twin's grids (`-m experiment=<paper>_cpu`: `seed` 1, 2, 3 and, for Gupta and Ibrahim,
   `shift` strong and weak), two jobs side by side on one core each through Hydra's joblib launcher;
   a finished grid or run is skipped, so an interrupted reproduction resumes;
3. per grid `runs.csv`, `curves.csv`, `runs_by_seed.csv` (`cpt.analysis.collect`), the figures
   (means with 95 % bands; also copied into docs/figures), and `results.md`: each grid point's mean
   +- standard deviation over seeds, and each claim of the paper with a verdict from the intervals
   (`cpt.analysis.verdicts`). `docs/REPRODUCTION.md`'s generated sections are replaced by them.

    python scripts/reproduce.py gupta2023 [--out outputs/reproduce] [--no-docs] [--report-only]
                                          [extra overrides]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402

from cpt.analysis import plots  # noqa: E402
from cpt.analysis import verdicts as v  # noqa: E402
from cpt.analysis.collect import collect  # noqa: E402
from cpt.analysis.seeds import SEED, by_seed  # noqa: E402

# relative to where it runs, like Hydra's outputs/ and the twins' `init` (conf/scale/cpu.yaml)
UPSTREAM_RUN = Path(os.environ.get("CPT_UPSTREAM", "outputs/twin-upstream"))
UPSTREAM = UPSTREAM_RUN / "checkpoints" / "last.ckpt"
ENV = {**os.environ, "CPT_UPSTREAM": str(UPSTREAM_RUN)}
COMMON = ["logger=csv", "trainer.enable_progress_bar=false", "skip_finished=true"]
SEEDS = (1, 2, 3)  # as conf/scale/cpu.yaml sweeps them; the chained runs loop over them here
REVISIONS = (750, 1500, 3000)  # the upstream steps kept as checkpoints (experiment=twin_upstream)
DOCS = Path("docs")
FIGURE_LIMIT = 200_000  # bytes: committed figures stay small


def finished(args: tuple[str, ...] | list[str]) -> bool:
    """Whether the single run these arguments name has finished already. A grid is always
    launched again (its folder may hold some of its jobs only): its finished jobs return at once
    (`skip_finished=true`)."""
    for arg in args:
        key, _, folder = arg.partition("=")
        if key == "hydra.run.dir":
            return (Path(folder) / "summary.json").is_file()
    return False


def train(*args: str, parallel: int = 1) -> None:
    """`python -m cpt.train ARGS`; `-m` grids run `parallel` jobs side by side (joblib), one core
    each; a single run gets both cores."""
    if finished(args):
        print("== finished already:", " ".join(args), flush=True)
        return
    launcher = (
        ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={parallel}"] if "-m" in args else []
    )
    command = [sys.executable, "-m", "cpt.train", *args, *launcher, *COMMON]
    print("$", " ".join(command[1:]), flush=True)
    threads = "1" if parallel > 1 else "2"
    subprocess.run(command, env={**ENV, "OMP_NUM_THREADS": threads})


def run_grid(experiment: str, folder: Path, extra: list[str]) -> None:
    """The `-m` grid of an experiment (its seeds and shifts included) into `folder`."""
    train("-m", f"experiment={experiment}", f"hydra.sweep.dir={folder}", *extra, parallel=2)


def side_by_side(runs: list[list[str]]) -> None:
    """Single runs two at a time, one core each (runs that finished already are skipped)."""

    def one(args: list[str]) -> None:
        if finished(args):
            print("== finished already:", " ".join(args), flush=True)
            return
        print("$ python -m cpt.train", " ".join(args), flush=True)
        subprocess.run(
            [sys.executable, "-m", "cpt.train", *args, *COMMON],
            env={**ENV, "OMP_NUM_THREADS": "1"},
        )

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(one, runs))


def revision(step: int) -> Path:
    return UPSTREAM.parent / f"step{step:07d}.ckpt"


def ensure_upstream() -> None:
    """Train the upstream model unless its run finished (last.ckpt alone may be a mid-run save)."""
    if (UPSTREAM_RUN / "summary.json").is_file() and UPSTREAM.is_file():
        return
    print(f"== the upstream model -> {UPSTREAM_RUN}", flush=True)
    train("experiment=twin_upstream", f"hydra.run.dir={UPSTREAM_RUN}")
    if not UPSTREAM.is_file():
        raise SystemExit(f"reproduce: the upstream run did not write {UPSTREAM}")


# ---- results ------------------------------------------------------------------------------------
def ran(folder: Path) -> bool:
    """Whether some job of this grid has finished (a report shows what there is)."""
    return any(folder.glob("*/summary.json"))


def results(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Collect a grid: its runs (with the derived columns verdicts use) and their seed groups."""
    collect(folder)
    runs, _ = plots.load(folder)
    runs = v.derive(runs)
    swept = runs.attrs.get("swept") or [SEED]
    if SEED not in swept:
        swept = [*swept, SEED]
    runs.attrs["swept"] = swept
    return runs, by_seed(runs, swept)


def figure(name: str, fig, folder: Path, paper: str) -> str:
    """Save a figure into the results folder and, small, into docs/figures/<paper>_<name>."""
    path = folder / name
    fig.savefig(path, dpi=90)
    plots.plt.close(fig)
    if DOCS.is_dir() and path.stat().st_size <= FIGURE_LIMIT:
        (DOCS / "figures").mkdir(exist_ok=True)
        shutil.copyfile(path, DOCS / "figures" / f"{paper}_{name}")
    return name


def by_shift(runs: pd.DataFrame, curves: pd.DataFrame, shift: str):
    """The runs (and curves) of one shift, labelled by the other swept keys."""
    part = runs[runs["shift"] == shift] if "shift" in runs else runs
    part.attrs["swept"] = [k for k in runs.attrs.get("swept", []) if k != "shift"]
    return part, curves[curves["run"].isin(part["run"])]


SHIFTS = {
    "strong": "strong shift: package-docs (upstream) -> python-code (downstream)",
    "weak": "weak shift: package-docs (upstream) -> python-docs (downstream)",
}


def titled(fig, shift: str):
    """A figure of one shift says which."""
    fig.suptitle(SHIFTS.get(shift, shift), fontsize=10)
    fig.tight_layout()
    return fig


def write(folder: Path, title: str, sections: list[str]) -> str:
    text = f"# {title}\n\n" + "\n".join(sections)
    runs = sum(
        json.loads(path.read_text()).get("wall_time_s", 0) for path in folder.rglob("summary.json")
    )
    text += f"\n\nIts runs' own wall times add up to {runs / 60:.0f} min"
    if (folder / WALL).is_file():  # the calls that trained it to the end, two runs side by side
        seconds = json.loads((folder / WALL).read_text())["seconds"]
        text += f"; the training took {seconds / 60:.0f} min on {os.cpu_count()} cores"
    text += ".\n"
    (folder / "results.md").write_text(text)
    print(text, flush=True)
    return text


def shifts(runs: pd.DataFrame) -> list[str]:
    return sorted(runs["shift"].dropna().unique()) if "shift" in runs else ["strong"]


# ---- the papers ----------------------------------------------------------------------------------
def gupta2023_train(out: Path, extra: list[str]) -> None:
    run_grid("gupta2023_rewarm_cpu", out / "grid", extra)
    run_grid("gupta2023_constant_cpu", out / "constant", extra)
    inits = ",".join(f"ckpt:{revision(step)}" for step in REVISIONS)
    if all(revision(step).is_file() for step in REVISIONS):
        run_grid("gupta2023_revisions_cpu", out / "revisions", [f"init={inits}", *extra])


def gupta2023(out: Path) -> str:
    runs, table = results(out / "grid")
    _, curves = plots.load(out / "grid")
    sections = [v.grid_table(table, ["shift", "optim.max_lr", "schedule.warmup"])]
    constant = table.iloc[0:0]  # none yet: its claim is left out
    if ran(out / "constant"):
        _, constant = results(out / "constant")
        sections += ["", "Constant LR 2e-4, no re-warming:", "", v.grid_table(constant, ["shift"])]
    claims = v.gupta_claims(table, constant)
    if ran(out / "revisions"):
        _, revisions = results(out / "revisions")
        revisions["upstream step"] = revisions["init"].map(v.revision_step)
        sections += [
            "",
            "From earlier upstream checkpoints (strong shift, warm-up 1 %, max LR 2e-3):",
        ]
        sections += ["", v.grid_table(revisions, ["upstream step"])]
        claims += v.revision_claims(revisions)
    made = []
    for shift in shifts(runs):
        part, part_curves = by_shift(runs, curves, shift)
        made.append(
            figure(
                f"rewarming_{shift}.png",
                titled(plots.plot_rewarming(part, part_curves), shift),
                out,
                "gupta2023",
            )
        )
        made.append(
            figure(
                f"stability_gap_{shift}.png",
                titled(plots.plot_stability_gap(part, part_curves, max_step=300), shift),
                out,
                "gupta2023",
            )
        )
    sections += ["", v.claims_table(claims), "", "Figures: " + ", ".join(made)]
    return write(out, "Gupta et al. 2023, small-scale twin", sections)


def ibrahim2024_replay_train(out: Path, extra: list[str]) -> None:
    run_grid("ibrahim2024_replay_cpu", out / "grid", extra)
    run_grid("ibrahim2024_union_cpu", out / "union", extra)


def ibrahim2024_replay(out: Path) -> str:
    runs, table = results(out / "grid")
    _, curves = plots.load(out / "grid")
    sections = [v.grid_table(table, ["shift", "callbacks.replay.fraction"], replayed=True)]
    union = table.iloc[0:0]  # none yet: its claims are left out
    if ran(out / "union"):
        _, union = results(out / "union")
        sections += [
            "",
            "The union baseline (from scratch on both, 50/50, 3300 steps):",
            "",
            v.grid_table(union, ["shift"]),
        ]
    made = []
    for shift in shifts(runs):
        part, _ = by_shift(runs, curves, shift)
        made.append(
            figure(
                f"replay_frontier_{shift}.png",
                titled(plots.plot_replay_frontier(part), shift),
                out,
                "ibrahim2024_replay",
            )
        )
    sections += [
        "",
        v.claims_table(v.replay_claims(table, union)),
        "",
        "Figures: " + ", ".join(made),
    ]
    return write(out, "Ibrahim et al. 2024 (replay), small-scale twin", sections)


INFINITE = {  # folder: (task, what it is, its overrides)
    "task1_infinite": (1, "infinite, constant to the end", ["schedule.anneal=0.0"]),
    "task1_infinite_annealed": (
        1,
        "infinite, annealed over the last 15 %",
        ["schedule.anneal=0.15"],
    ),
    "task1_cosine": (
        1,
        "cosine re-warm + re-decay",
        ["schedule=cosine", "schedule.warmup=0.01", "schedule.min_lr_ratio=0.1"],
    ),
    "task2_infinite": (
        2,
        "from task 1's constant: constant carried, no re-warm",
        ["schedule.anneal=0.0"],
    ),
    "task2_infinite_annealed": (
        2,
        "from task 1's constant: constant, annealed at the end",
        ["schedule.anneal=0.15"],
    ),
    "task2_cosine": (
        2,
        "from task 1's cosine: re-warm + re-decay again",
        [
            "schedule=cosine",
            "schedule.warmup=0.01",
            "schedule.min_lr_ratio=0.1",
            "optim.max_lr=2e-3",
            "callbacks.rewarm.optimizer_state=fresh",
        ],
    ),
}


def ibrahim2024_infinite_train(out: Path, extra: list[str]) -> None:
    """Two tasks in a chain, per seed: code after the upstream model, then back to its domain."""
    ckpt = "checkpoints/last.ckpt"
    experiment = {
        1: "experiment=ibrahim2024_infinite_cpu",
        2: "experiment=ibrahim2024_infinite_next_cpu",
    }
    parent = {
        "task2_infinite": "task1_infinite",
        "task2_infinite_annealed": "task1_infinite",
        "task2_cosine": "task1_cosine",
    }
    for task in (1, 2):
        side_by_side(
            [
                [
                    experiment[task],
                    f"seed={seed}",
                    *overrides,
                    *(
                        [f"init=ckpt:{out / parent[name] / f'seed-{seed}' / ckpt}"]
                        if task == 2
                        else []
                    ),
                    f"hydra.run.dir={out / name / f'seed-{seed}'}",
                    *extra,
                ]
                for name, (t, _, overrides) in INFINITE.items()
                if t == task
                for seed in SEEDS
            ]
        )


def ibrahim2024_infinite(out: Path) -> str:
    collect(out)
    runs, curves = plots.load(out)
    runs = v.derive(runs)
    runs["variant"] = [Path(r).parent.name for r in runs["run"]]
    runs.attrs["swept"] = ["variant", SEED]
    table = by_seed(runs, ["variant", SEED])
    table["variant"] = pd.Categorical(table["variant"], list(INFINITE))
    table = table.sort_values("variant")
    table["run"] = [f"task {INFINITE[n][0]}, {INFINITE[n][1]}" for n in table["variant"]]
    sections = [v.grid_table(table, ["run"])]
    made = []
    for task in (1, 2):
        part = runs[runs["variant"].str.startswith(f"task{task}")]
        part.attrs["swept"] = ["variant", SEED]
        made.append(
            figure(
                f"stability_gap_task{task}.png",
                plots.plot_stability_gap(
                    part, curves[curves["run"].isin(part["run"])], max_step=300
                ),
                out,
                "ibrahim2024_infinite",
            )
        )
    chains = {
        "infinite, constant carried into task 2": ("task1_infinite", "task2_infinite"),
        "infinite, annealed at the end of task 2": ("task1_infinite", "task2_infinite_annealed"),
        "cosine re-warm + re-decay on each task": ("task1_cosine", "task2_cosine"),
    }
    made.append(
        figure(
            "task_sequence.png",
            plots.plot_task_sequence(runs, curves, chains, steps=300),
            out,
            "ibrahim2024_infinite",
        )
    )
    sections += [
        "",
        v.claims_table(v.infinite_claims(table.set_index("variant"))),
        "",
        "Figures: " + ", ".join(made),
    ]
    return write(out, "Ibrahim et al. 2024 (infinite schedule), small-scale twin", sections)


def guo2024_train(out: Path, extra: list[str]) -> None:
    run_grid("guo2024_stability_gap_cpu", out / "grid", extra)


def guo2024(out: Path) -> str:
    runs, table = results(out / "grid")
    _, curves = plots.load(out / "grid")
    sections = [v.grid_table(table, ["mitigation"], tasks=True)]
    tasks = sorted({d for d in curves.loc[curves["metric"] == "task_acc_norm", "domain"]})
    made = [
        figure(
            "stability_gap.png",
            plots.plot_stability_gap(runs, curves, max_step=300),
            out,
            "guo2024",
        ),
    ]
    if tasks:
        made.append(
            figure(
                "stability_gap_tasks.png",
                plots.plot_curves(
                    runs,
                    curves,
                    "task_acc_norm",
                    "step",
                    plots.swept(runs),
                    tasks,
                    "{domain}",
                    "optimizer step",
                    "accuracy (acc_norm)",
                    300,
                ),
                out,
                "guo2024",
            )
        )
    sections += ["", v.claims_table(v.guo_claims(table)), "", "Figures: " + ", ".join(made)]
    return write(out, "Guo et al. 2024, small-scale twin", sections)


PAPERS = {  # name: (its runs, its results); `all` trains every paper, then reports each
    "gupta2023": (gupta2023_train, gupta2023),
    "guo2024": (guo2024_train, guo2024),
    "ibrahim2024_infinite": (ibrahim2024_infinite_train, ibrahim2024_infinite),
    "ibrahim2024_replay": (ibrahim2024_replay_train, ibrahim2024_replay),
}
WALL = "train_seconds.json"


def timed(folder: Path, work: Callable[[], None]) -> None:
    """Run `work` and add its wall time to `folder/train_seconds.json` (resumed calls add up)."""
    started = time.time()
    work()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / WALL
    seconds = json.loads(path.read_text())["seconds"] if path.is_file() else 0.0
    path.write_text(json.dumps({"seconds": round(seconds + time.time() - started, 1)}))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("paper", choices=[*PAPERS, "all"])
    parser.add_argument("--out", default="outputs/reproduce")
    parser.add_argument("--no-docs", action="store_true", help="leave docs/ as it is")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing: tables, verdicts and figures from the runs there are",
    )
    args, extra = parser.parse_known_args()
    if args.no_docs:
        global DOCS
        DOCS = Path("/nonexistent")
    out = Path(args.out)
    names = list(PAPERS) if args.paper == "all" else [args.paper]
    if args.report_only:
        names = [n for n in names if (out / n).is_dir()]
    else:
        timed(out / "upstream", ensure_upstream)
        for name in names:
            print(f"== {name}: training", flush=True)
            timed(out / name, lambda: PAPERS[name][0](out / name, extra))  # noqa: B023
    for name in names:
        text = PAPERS[name][1](out / name)
        text = v.embed_figures(text, name, DOCS / "figures")
        if DOCS.is_dir() and not v.update_doc(DOCS / "REPRODUCTION.md", name, text):
            print(f"reproduce: docs/REPRODUCTION.md has no section {name}: left as it is")
    reported = {
        n: (out / n / "results.md").read_text()
        for n in PAPERS
        if (out / n / "results.md").is_file()
    }
    (out / "summary.md").write_text(v.summary(reported))
    if DOCS.is_dir():
        v.update_doc(DOCS / "REPRODUCTION.md", "summary", v.summary(reported))


if __name__ == "__main__":
    main()
