"""`python -m cpt.evaluate ckpt=<checkpoint> tasks=[...]`: lm-evaluation-harness on a checkpoint.

    python -m cpt.evaluate ckpt=outputs/demo/.../cpt/checkpoints/last.ckpt tasks=[my_task] \\
        include_path=my_tasks/ limit=200
    python -m cpt.evaluate hf=/models/pythia-410m tasks=[hellaswag,arc_easy,piqa] precision=bf16

The built-in tasks `next_line_<domain>` (`cpt/tasks/next_line.py`) of a `ckpt=` are made from that
run's held-out documents, found by the checkpoint's data record under `data_dir=`.
The model is a `.ckpt` file, a sharded checkpoint folder (`ckpt=`) or a Hugging Face folder or hub
id (`hf=`); tasks, prompts and metrics are lm-eval's own (its task YAMLs, and a user's through
`include_path`). It prints lm-eval's table and writes lm-eval's results (`results.json`:
`results[task]["acc,none"]`, ...) to the folder named on its last line. Bad input is one line,
exit status 2.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from cpt.errors import reported
from cpt.tasks.index import (
    EvalInputError,
    builtin_requested,
    check_decodes,
    check_limit,
    check_tasks,
    task_manager,
)

OPTIONS = {
    "ckpt": None,  # a cpt checkpoint: file or sharded folder
    "hf": None,  # a Hugging Face folder or hub id (downloaded only then)
    "tasks": None,  # lm-eval task or group names
    "include_path": None,  # a folder of the user's lm-eval task YAMLs
    "data_dir": None,  # prepared datasets, for next_line_<domain>; default: $CPT_DATA_DIR or data
    "limit": None,  # examples per task: a count >= 1 or a fraction in (0, 1]
    "num_fewshot": None,
    "batch_size": 32,
    "precision": "32",  # 32 | bf16 (autocast)
    "device": "auto",  # auto: a GPU when there is one
    "tokenizer": None,  # tokenizer.json; default: the run's, or the HF folder's
    "output": None,  # default: outputs/eval/<date>/<time>
}


def parse(argv: list[str]) -> dict[str, Any]:
    given = OmegaConf.to_container(OmegaConf.from_dotlist(argv)) if argv else {}
    unknown = sorted(set(given) - set(OPTIONS))
    if unknown:
        raise EvalInputError(f"{unknown[0]}: unknown option; expected one of {sorted(OPTIONS)}")
    args = {**OPTIONS, **given}
    if (args["ckpt"] is None) == (args["hf"] is None):
        raise EvalInputError("ckpt: give a checkpoint (ckpt=<file or folder>) or hf=<folder or id>")
    check_limit(args["limit"])
    if isinstance(args["tasks"], str):
        args["tasks"] = [args["tasks"]]
    if not args["tasks"]:
        raise EvalInputError("tasks: expected a list of lm-eval task names, e.g. tasks=[piqa]")
    if str(args["precision"]) not in ("32", "bf16"):
        raise EvalInputError(f"precision: expected 32 or bf16, got {args['precision']!r}")
    return args


def load(args: dict[str, Any]) -> tuple[Any, Any]:
    """The model (eval mode, on its device) and its tokenizer."""
    from cpt.data.tokenizer import load_tokenizer
    from cpt.models.registry import build_model
    from cpt.run.initial import initial_model, load_into

    init = f"ckpt:{args['ckpt']}" if args["ckpt"] is not None else f"hf:{args['hf']}"
    initial = initial_model(init, None)
    model = build_model(initial.config)
    load_into(model, initial)
    tokenizer = args["tokenizer"]
    if tokenizer is None:
        source = Path(initial.source).resolve()
        tokenizer = (
            (source / "tokenizer.json")
            if initial.folder
            else (source.parent.parent / "tokenizer.json")
        )
    if not Path(tokenizer).is_file():
        raise EvalInputError(f"tokenizer: {tokenizer}: no such file; name one with tokenizer=")
    device = args["device"]
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return model.to(device).eval(), load_tokenizer(str(tokenizer))  # with its config's start token


def evaluate(args: dict[str, Any]) -> tuple[dict[str, Any], Path]:
    from lm_eval import simple_evaluate
    from lm_eval.utils import handle_non_serializable

    from cpt.tasks.harness import HarnessLM
    from cpt.tasks.next_line import write_tasks

    manager = task_manager(args["include_path"], tasks=args["tasks"])
    builtin = builtin_requested(args["tasks"], manager)
    prepared = run_datasets(args) if builtin else {}
    check_tasks(args["tasks"], manager, list(prepared))  # before any weights are read
    model, tokenizer = load(args)
    if builtin:
        manager = task_manager(
            args["include_path"],
            write_tasks(data_root(args), prepared, tokenizer),
            tasks=args["tasks"],
        )
    check_decodes(args["tasks"], manager, tokenizer)
    device = next(model.parameters()).device
    bf16 = str(args["precision"]) == "bf16"

    def context() -> Any:
        if bf16:
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    results = simple_evaluate(
        model=HarnessLM(model, tokenizer, context=context, batch_size=args["batch_size"]),
        tasks=list(args["tasks"]),
        limit=args["limit"],
        num_fewshot=args["num_fewshot"],
        task_manager=manager,
        log_samples=False,
    )
    out = Path(args["output"] or time.strftime("outputs/eval/%Y-%m-%d/%H-%M-%S"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(
        json.dumps(results, indent=2, default=handle_non_serializable) + "\n"
    )
    return results, out


def data_root(args: dict[str, Any]) -> Path:
    return Path(args["data_dir"] or os.environ.get("CPT_DATA_DIR", "data")).expanduser()


def run_datasets(args: dict[str, Any]) -> dict[str, Any]:
    """The prepared datasets of the checkpoint's run, by domain (their held-out documents make the
    built-in tasks)."""
    from cpt.checkpoints.files import read_lightning_checkpoint
    from cpt.data.shards import is_prepared, load_prepared

    if args["ckpt"] is None:
        return {}
    state = read_lightning_checkpoint(args["ckpt"], parts=()).get("CPTDataModule") or {}
    prepared = {}
    for domain, split in (state.get("splits") or {}).items():
        folder = data_root(args) / split["dataset"]
        if not is_prepared(folder):
            raise EvalInputError(
                f"data_dir: {folder}: the run's prepared {domain!r} data is not there; its "
                "held-out documents make the built-in tasks (name the folder with data_dir=)"
            )
        prepared[domain] = load_prepared(folder)
    return prepared


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if {"-h", "--help"} & set(argv):
        options = "\n".join(f"  {key}={value}" for key, value in OPTIONS.items())
        usage = (
            "usage: python -m cpt.evaluate (ckpt=<checkpoint> | hf=<folder or hub id>) tasks=[...]"
        )
        print(f"{usage} [option=value ...]\n\n{__doc__}\noptions (default):\n{options}")
        return
    with reported():
        args = parse(argv)
        results, out = evaluate(args)
    from lm_eval.utils import make_table

    print(make_table(results))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
