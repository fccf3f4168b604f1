"""`python scripts/reproduce.py PAPER` (or `make reproduce PAPER=...`): a paper's small-scale twin on
the built-in corpora, three seeds per grid point, on a strong and a weak shift, with verdicts.

PAPER is gupta2023, guo2024, ibrahim2024_infinite, ibrahim2024_replay or all (in that order: the
union baseline, the longest runs, last).

1. the upstream model: `tiny` pre-trained on package-docs (experiment=twin_upstream) into
   outputs/twin-upstream with checkpoints every 750 steps (its revisions), skipped when its
   checkpoint exists (CPT_UPSTREAM names another run folder);
2. the twin's grids (`-m experiment=<paper>_cpu`: `seed` 1, 2, 3 and, for Gupta and Ibrahim,
   `shift` strong and weak; the infinite schedule's two-task chain loops over both), two jobs
   side by side on one core each through Hydra's joblib launcher; a finished grid or run is
   skipped, so an interrupted reproduction resumes;
3. per grid `runs.csv`, `curves.csv`, `runs_by_seed.csv` (`cpt.analysis.collect`), the figures
   (means with 95 % bands; also copied into docs/figures), and `results.md`: each grid point's mean
   +- standard deviation over seeds, and each claim of the paper with a verdict from the intervals
   (`cpt.reproduce.verdicts`). `docs/REPRODUCTION.md`'s generated sections are replaced by them.

    python scripts/reproduce.py gupta2023 [--out outputs/reproduce] [--no-docs] [--report-only]
                                          [extra overrides]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from cpt.reproduce import reports  # noqa: E402
from cpt.reproduce.design import (  # noqa: E402
    GUPTA_POINTS,
    guo_probe,
    gupta_point,
    shared_no_replay,
    union_windows,
)
from cpt.reproduce.reports import INFINITE, SHIFTS, WALL  # noqa: E402
from cpt.scale.hardware import processor  # noqa: E402

# relative to where it runs, like Hydra's outputs/ and the twins' `init` (conf/scale/cpu.yaml)
UPSTREAM_RUN = Path(os.environ.get("CPT_UPSTREAM", "outputs/twin-upstream"))
UPSTREAM = UPSTREAM_RUN / "checkpoints" / "last.ckpt"
ENV = {**os.environ, "CPT_UPSTREAM": str(UPSTREAM_RUN)}
COMMON = ["logger=csv", "trainer.enable_progress_bar=false", "skip_finished=true"]
SEEDS = (1, 2, 3)  # as conf/scale/cpu.yaml sweeps them; the chained runs loop over them here
REVISIONS = (750, 1500, 3000)  # the upstream steps kept as checkpoints (experiment=twin_upstream)


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
# ---- the papers ----------------------------------------------------------------------------------
def gupta2023_train(out: Path, extra: list[str]) -> None:
    """Each point of GUPTA_POINTS as its own grid of shifts and seeds (`grid/<point>/`)."""
    for name in GUPTA_POINTS:
        run_grid("gupta2023_rewarm_cpu", out / "grid" / name, [*gupta_point(name), *extra])
    run_grid("gupta2023_constant_cpu", out / "constant", extra)
    inits = ",".join(f"ckpt:{revision(step)}" for step in REVISIONS)
    missing = [str(revision(step)) for step in REVISIONS if not revision(step).is_file()]
    if missing:  # an upstream run from before its revisions were kept: its claims are left out
        print(f"reproduce: no revisions grid: the upstream run lacks {', '.join(missing)}; "
              f"train it again (remove {UPSTREAM_RUN}) to judge the revisions", flush=True)  # fmt: skip
    else:
        run_grid("gupta2023_revisions_cpu", out / "revisions", [f"init={inits}", *extra])


def ibrahim2024_replay_train(out: Path, extra: list[str]) -> None:
    """The replay grid (its 0 % arm is Gupta's paper-setting grid, shared), then per shift and
    seed the union baseline (`union/<shift>/seed-<n>`) on the windows the sequential run with
    that shift's replay fraction saw."""
    paper = [*gupta_point("paper"), *extra]  # its 0 % arm is Gupta's paper setting: trained once
    run_grid("gupta2023_rewarm_cpu", shared_no_replay(out), paper)
    run_grid("ibrahim2024_replay_cpu", out / "grid", extra)
    side_by_side(
        [
            [
                "experiment=ibrahim2024_union_cpu",
                f"shift={shift}",
                f"seed={seed}",
                *(f"data.mixture.{d}={w}" for d, w in union_windows(shift).items()),
                f"hydra.run.dir={out / 'union' / shift / f'seed-{seed}'}",
                *extra,
            ]
            for shift in SHIFTS
            for seed in SEEDS
        ]
    )


def ibrahim2024_infinite_train(out: Path, extra: list[str]) -> None:
    """Two tasks in a chain, per shift and seed (`<variant>/<shift>/seed-<n>`): the shift's domain
    after the upstream model, then back to the upstream's domain."""
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
                    f"shift={shift}",
                    f"seed={seed}",
                    *overrides,
                    *(
                        [f"init=ckpt:{out / parent[name] / shift / f'seed-{seed}' / ckpt}"]
                        if task == 2
                        else []
                    ),
                    f"hydra.run.dir={out / name / shift / f'seed-{seed}'}",
                    *extra,
                ]
                for shift in SHIFTS
                for name, (t, _, overrides) in INFINITE.items()
                if t == task
                for seed in SEEDS
            ]
        )


def guo2024_train(out: Path, extra: list[str]) -> None:
    """Per shift (`grid/<shift>/`): the plain run and two mitigations as one grid, then the
    quality subset judged by a model of the new domain: the plain run's final checkpoint (seed 1)."""
    for shift in SHIFTS:
        common = [f"shift={shift}", *guo_probe(shift), *extra]
        main = out / "grid" / shift / "main"
        run_grid("guo2024_stability_gap_cpu", main, ["mitigation=none,subcorpus,mixture", *common])
        judge = finished_run(main, mitigation="none", seed="1")
        if judge is None:
            print(
                f"reproduce: no finished plain run in {main}: the quality subset waits", flush=True
            )
            continue
        judge_ckpt = judge / "checkpoints" / "last.ckpt"  # a job folder's name holds = and ,
        reference = f"data.domains.downstream.quality.reference='ckpt:{judge_ckpt}'"
        quality = out / "grid" / shift / "quality"
        run_grid("guo2024_stability_gap_cpu", quality, ["mitigation=quality", reference, *common])


def finished_run(sweep: Path, **overrides: str) -> Path | None:
    """The finished job of a sweep whose overrides include these `key=value`s."""
    from cpt.analysis.collect import find_jobs, parse_overrides

    for job in find_jobs(sweep):
        given = parse_overrides(job)
        wanted = all(str(given.get(k)) == str(v) for k, v in overrides.items())
        if wanted and (job / "summary.json").is_file():
            return job
    return None


PAPERS = {  # name: (its runs, its results); `all` trains every paper, then reports each
    "gupta2023": (gupta2023_train, reports.gupta2023),
    "guo2024": (guo2024_train, reports.guo2024),
    "ibrahim2024_infinite": (ibrahim2024_infinite_train, reports.ibrahim2024_infinite),
    "ibrahim2024_replay": (ibrahim2024_replay_train, reports.ibrahim2024_replay),
}


def timed(folder: Path, work: Callable[[], None]) -> None:
    """Run `work` and add its wall time to `folder/train_seconds.json` (resumed calls add up),
    with the processor and the days it ran on: a stated time names its machine."""
    started = time.time()
    work()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / WALL
    before = json.loads(path.read_text()) if path.is_file() else {}
    where = {*before.get("processors", []), processor()}
    days = {*before.get("dates", []), datetime.date.today().isoformat()}
    path.write_text(
        json.dumps(
            {
                "seconds": round(before.get("seconds", 0.0) + time.time() - started, 1),
                "processors": sorted(where),
                "dates": sorted(days),
            }
        )
    )


def reported_results(out: Path, doc: Path) -> dict[str, str]:
    """Each paper's results for the summary: its `results.md` under `out`, or, for a paper not
    reproduced there, its section of the doc as it stands (sections are regenerated one paper at
    a time; the summary keeps every paper's rows)."""
    texts = {
        n: (out / n / "results.md").read_text()
        if (out / n / "results.md").is_file()
        else reports.doc_section(doc, n)
        for n in PAPERS
    }
    return {n: text for n, text in texts.items() if text}


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m cpt.reproduce.twins",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
        reports.DOCS = Path("/nonexistent")
    docs = reports.DOCS
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
        text = reports.embed_figures(text, name, docs / "figures")
        if docs.is_dir() and not reports.update_doc(docs / "REPRODUCTION.md", name, text):
            print(f"reproduce: docs/REPRODUCTION.md has no section {name}: left as it is")
    reported = reported_results(out, docs / "REPRODUCTION.md")
    (out / "summary.md").write_text(reports.summary(reported))
    if docs.is_dir():
        reports.update_doc(docs / "REPRODUCTION.md", "summary", reports.summary(reported))


if __name__ == "__main__":
    main()
