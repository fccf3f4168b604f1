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
import functools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

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


class EvalInputError(ValueError):
    """Bad input to `cpt.evaluate` or the task evaluation: reported as one line."""


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


def check_limit(limit: Any) -> None:
    if limit is None:
        return
    if isinstance(limit, bool) or not isinstance(limit, (int, float)) or limit <= 0:
        raise EvalInputError(f"limit: expected a count >= 1 or a fraction in (0, 1], got {limit!r}")
    if isinstance(limit, float) and limit > 1:
        raise EvalInputError(f"limit: a fraction must be in (0, 1], got {limit}")


def task_manager(include_path: str | None, *generated: Path, tasks: list[str] | None = None) -> Any:
    """lm-eval's task index, with the user's folder (a folder without YAMLs is refused) and the
    folders of built-in tasks written for this run. When `tasks` are all built-in next-line tasks,
    lm-eval's own ~15k task files are left out of it (indexing them takes seconds per process)."""
    from cpt.tasks.next_line import domain_of

    defaults = tasks is None or any(domain_of(t) is None for t in tasks)
    folders = [str(Path(f).resolve()) for f in generated]
    if include_path is not None:
        folder = Path(include_path).expanduser().resolve()
        if not folder.is_dir():
            raise EvalInputError(f"include_path: {folder}: no such folder")
        if not any(folder.rglob("*.yaml")):
            raise EvalInputError(f"include_path: {folder}: no task YAML files in it")
        folders.insert(0, str(folder))
    return _index(tuple(folders), defaults)


@functools.lru_cache(maxsize=4)
def _index(folders: tuple[str, ...], defaults: bool = True) -> Any:
    """Indexing lm-eval's ~15k task files takes seconds: once per set of folders and process."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=list(folders) or None, include_defaults=defaults)


def check_tasks(tasks: list[str], manager: Any, domains: list[str] | None = None) -> None:
    """Every name is a task lm-eval knows, or a built-in task of one of the run's `domains`."""
    from cpt.tasks.next_line import domain_of, task_name

    known = set(manager.all_tasks)
    for name in tasks:
        domain = domain_of(name)
        if name not in known and domain is not None and domain not in (domains or []):
            builtin = [task_name(d) for d in domains or []]
            raise EvalInputError(
                f"tasks: {name!r} is a built-in next-line task of a domain {domain!r} this run "
                f"does not have; expected one of {builtin}"
                if domains
                else f"tasks: {name!r} is a built-in task made from a cpt run's held-out "
                "documents; evaluate that run's checkpoint (ckpt=) or name the task folder it "
                "wrote (include_path=)"
            )
        if name not in known and domain is None:
            raise EvalInputError(
                f"tasks: unknown task {name!r}; expected an lm-eval task, group or tag "
                "(lm_eval --tasks list) or one in include_path"
            )


def builtin_requested(tasks: list[str], manager: Any) -> list[str]:
    """The names among `tasks` that are built-in next-line tasks still to be written (not found
    in the index, e.g. a folder named with include_path)."""
    from cpt.tasks.next_line import domain_of

    known = set(manager.all_tasks)
    return [t for t in tasks if t not in known and domain_of(t)]


def check_decodes(tasks: list[str], manager: Any, tokenizer: Any) -> None:
    """A generative task needs a tokenizer that turns tokens back into text."""
    if tokenizer.decoder is None and any(
        _output_type(manager, name) == "generate_until" for name in tasks
    ):
        raise EvalInputError(
            "tasks: a generative task needs a tokenizer that decodes, and this one has no decoder"
        )


def _output_type(manager: Any, name: str) -> str | None:
    entry = manager.task_index.get(name)
    config = getattr(entry, "cfg", None) or {}
    return config.get("output_type")


def load(args: dict[str, Any]) -> tuple[Any, Any]:
    """The model (eval mode, on its device) and its tokenizer."""
    from tokenizers import Tokenizer

    from cpt.checkpoints import initial_model, load_into
    from cpt.models.registry import build_model

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
    return model.to(device).eval(), Tokenizer.from_file(str(tokenizer))


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
    from cpt.checkpoints import read_lightning_checkpoint
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
    from cpt.models.hf import CheckpointError

    try:
        args = parse(sys.argv[1:] if argv is None else argv)
        results, out = evaluate(args)
    except (EvalInputError, CheckpointError) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        sys.exit(2)
    from lm_eval.utils import make_table

    print(make_table(results))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
