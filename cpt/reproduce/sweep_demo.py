"""`make sweep-demo`: a small grid on the built-in corpora, collected and turned into the figures.

1. pre-trains `tiny` on python-docs (the demo's upstream run; skipped when its checkpoint exists);
2. continues it on python-code in a multirun: 2 max LRs x 2 warm-ups x 2 replay fractions, two jobs
   at a time with the joblib launcher;
3. collects the sweep into runs.csv and curves.csv;
4. executes the three notebooks on it, which save rewarming.png, replay_frontier.png and
   stability_gap.png into the sweep folder.

    python scripts/sweep_demo.py [--out outputs/sweep-demo] [--steps 200] [extra overrides]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from cpt.analysis.collect import collect
from cpt.analysis.notebooks import NOTEBOOKS, execute

GRID = ["optim.max_lr=5e-4,2e-3", "schedule.warmup=0.01,0.1", "callbacks.replay.fraction=0.0,0.25"]


def train(args: list[str], env: dict[str, str] | None = None, check: bool = True) -> None:
    """`python -m cpt.train ARGS` in its own process (progress bars straight to the terminal)."""
    result = subprocess.run([sys.executable, "-m", "cpt.train", *args], env=env)
    if check and result.returncode != 0:
        raise SystemExit(
            f"sweep-demo: cpt.train {' '.join(args)} failed (exit {result.returncode})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m cpt.reproduce.sweep_demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", default="outputs/sweep-demo")
    parser.add_argument("--steps", type=int, default=200, help="CPT steps per job")
    parser.add_argument("--pretrain-steps", type=int, default=None)
    args, extra = parser.parse_known_args()
    out, started = Path(args.out), time.time()

    upstream = out / "pretrain" / "checkpoints" / "last.ckpt"
    if not upstream.is_file():
        pre = [
            "experiment=demo_pretrain",
            f"hydra.run.dir={out / 'pretrain'}",
            "logger=csv",
            *extra,
        ]
        if args.pretrain_steps:
            pre.append(f"trainer.max_steps={args.pretrain_steps}")
        print(f"== pre-training the upstream model -> {out / 'pretrain'}", flush=True)
        train(pre)

    sweep = out / "sweep"
    print(f"== {' x '.join(g.split('=')[0] for g in GRID)} grid -> {sweep}", flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two jobs side by side, one core each
    train(
        [
            "-m",
            "experiment=demo_cpt",
            f"init=ckpt:{upstream}",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            f"hydra.sweep.dir={sweep}",
            f"trainer.max_steps={args.steps}",
            f"trainer.val_check_interval={max(args.steps // 8, 1)}",
            "trainer.enable_progress_bar=false",
            *GRID,
            *extra,
        ],
        env=env,
        check=False,  # a failed job is reported by the collector below
    )
    runs_csv, curves_csv, runs = collect(sweep)
    failed = [r["run"] for r in runs if r["status"] != "finished"]
    print(f"== collected {len(runs)} runs ({len(failed)} not finished) -> {runs_csv}")
    for notebook in ("rewarming", "replay", "stability_gap"):
        executed = execute(NOTEBOOKS / f"{notebook}.ipynb", sweep)
        print(f"== executed {executed}")
    print("figures:", ", ".join(str(p) for p in sorted(sweep.glob("*.png"))))
    print(f"sweep-demo wall time: {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
