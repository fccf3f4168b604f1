"""The embedded demo: pre-train `tiny` on English prose, continue it on Python source.

`python -m cpt.demo` (what `make demo` runs) needs no download: both corpora come with Python and
the tokenizer is trained here. It runs `cpt.train` twice, exactly as a user would: pre-training,
then continual pre-training re-warmed, with 25 % replay, the stability-gap monitor and the built-in
next-line tasks in the loop. It prints the upstream and downstream validation loss and task scores
before and after CPT beside the gap metrics, and saves the figures.
Extra arguments are Hydra overrides passed to both runs (e.g. `trainer.max_steps=50`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from cpt.analysis.curves import plot_sequence


def train(overrides: list[str]) -> None:
    """One `python -m cpt.train` run; its progress bars go straight to the terminal."""
    result = subprocess.run([sys.executable, "-m", "cpt.train", *overrides], check=False)
    if result.returncode != 0:
        raise SystemExit(f"demo: cpt.train {' '.join(overrides)} failed (exit {result.returncode})")


def table(summary: dict) -> str:
    """Loss before and after continual pre-training, and the stability gap, per domain."""
    before, after = summary["initial_val_loss"], summary["final_val_loss"]
    gap = summary.get("stability_gap", {})
    header = f"{'domain':<12}{'before CPT':>12}{'after CPT':>12}{'change':>10}"
    if gap:
        header += f"{'gap peak':>10}{'at step':>9}{'recovered':>11}{'gap area':>10}"
    lines = [header, "-" * len(header)]
    for domain in before:
        b, a = before[domain], after[domain]
        line = f"{domain:<12}{b:>12.3f}{a:>12.3f}{a - b:>+10.3f}"
        if domain in gap:
            g = gap[domain]
            recovered = "never" if g["recovery_step"] is None else str(g["recovery_step"])
            line += f"{g['peak']:>10.3f}{g['peak_step']:>9}{recovered:>11}{g['gap_area']:>10.1f}"
        lines.append(line)
    return "\n".join(lines)


def task_table(summary: dict) -> str:
    """Task scores before and after continual pre-training, and their gap (a drop), per metric."""
    before, after = summary.get("initial_tasks", {}), summary.get("final_tasks", {})
    gap = summary.get("task_gap", {})
    width = max([len(name) for name in before] + [12]) + 2
    header = (
        f"{'task/metric':<{width}}{'before CPT':>12}{'after CPT':>12}{'change':>10}"
        f"{'gap low':>10}{'at step':>9}{'recovered':>11}"
    )
    lines = [header, "-" * len(header)]
    for name in before:
        b, a, g = before[name], after[name], gap.get(name, {})
        recovered = "never" if g.get("recovery_step", 0) is None else str(g.get("recovery_step"))
        lines.append(
            f"{name:<{width}}{b:>12.3f}{a:>12.3f}{a - b:>+10.3f}"
            f"{g.get('peak', b):>10.3f}{g.get('peak_step', 0):>9}{recovered:>11}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m cpt.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", default=None, help="output folder (default: outputs/demo/<time>)")
    parser.add_argument("--pretrain-steps", type=int, default=None)
    parser.add_argument("--cpt-steps", type=int, default=None)
    parser.add_argument("--logger", default="wandb", choices=["wandb", "csv"])
    args, overrides = parser.parse_known_args(argv)
    out = Path(args.out or f"outputs/demo/{time.strftime('%Y-%m-%d_%H-%M-%S')}")
    started = time.time()
    common = [f"logger={args.logger}", *overrides]

    pre = [f"hydra.run.dir={out / 'pretrain'}", "experiment=demo_pretrain", *common]
    if args.pretrain_steps:
        pre.append(f"trainer.max_steps={args.pretrain_steps}")
    print(f"== 1/2 pre-training tiny on python-docs -> {out / 'pretrain'}", flush=True)
    train(pre)

    checkpoint = out / "pretrain" / "checkpoints" / "last.ckpt"
    cpt = [
        f"hydra.run.dir={out / 'cpt'}",
        "experiment=demo_cpt",
        f"init=ckpt:{checkpoint}",
        *common,
    ]
    if args.cpt_steps:
        cpt.append(f"trainer.max_steps={args.cpt_steps}")
    print(f"== 2/2 continual pre-training on python-code -> {out / 'cpt'}", flush=True)
    train(cpt)

    summary = json.loads((out / "cpt" / "summary.json").read_text())
    figure = plot_sequence(
        [out / "pretrain", out / "cpt"], ["pre-training", "CPT"], out / "val_loss.png"
    )
    tokens = summary["tokens_per_source"]
    replayed = tokens.get("upstream", 0) / max(sum(tokens.values()), 1)
    print(
        "\nValidation loss (nats/token) before and after CPT on python-code, "
        f"{replayed:.0%} of its tokens replayed from python-docs; the stability gap on fixed\n"
        "held-out batches: peak loss, its step, the step the loss is back at its start, area:"
    )
    print(table(summary))
    if summary.get("initial_tasks"):
        print(
            "\nBuilt-in tasks (lm-eval; the true next line of a held-out document among four, "
            "chance 0.25;\nacc_norm scores per character), before and after CPT, and the "
            "lowest point of the first drop:"
        )
        print(task_table(summary))
        cost = summary["task_eval"]
        print(
            f"task evaluation: {cost['evaluations']} evaluations, {cost['seconds']:.0f} s of the "
            f"CPT run's {summary['wall_time_s']:.0f} s "
            f"({cost['seconds'] / summary['wall_time_s']:.0%}; "
            f"{cost['seconds'] / max(cost['evaluations'], 1) / summary['wall_time_s']:.1%} each)"
        )
    print(f"\nfigures: {figure}, {out / 'cpt' / 'stability_gap.png'}")
    print(f"demo wall time: {time.time() - started:.0f} s")
    return summary


if __name__ == "__main__":
    main()
