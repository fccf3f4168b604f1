"""`python -m cpt.export <checkpoint> <folder>`: a training checkpoint as a Hugging Face model.

The checkpoint is a `.ckpt` file or a sharded checkpoint folder (FSDP), read whole in this process.

The folder loads with `transformers.AutoModelForCausalLM.from_pretrained(folder)` as the family's
own class (`GPTNeoXForCausalLM`; `LlamaForCausalLM`, `Qwen2ForCausalLM` or `MistralForCausalLM` for
the Llama family), so a continued model can be evaluated by any tool that reads Hugging Face
checkpoints. The run's `tokenizer.json` (saved beside `checkpoints/` by `cpt.train`), or the one
`--tokenizer` names, goes along with the files that declare its special tokens
(`tokenizer_config.json`, `special_tokens_map.json`, `generation_config.json`): `AutoTokenizer`
and `generate` then know `bos`, `eos` and `pad` (`cpt/data/hf_tokenizer.py`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cpt.checkpoints.files import checkpoint_config, model_state, read_lightning_checkpoint
from cpt.data.hf_tokenizer import write_tokenizer_files
from cpt.errors import reported
from cpt.models.hf import CheckpointError, load_weights, to_hf
from cpt.models.registry import build_model


def export(checkpoint: str | Path, folder: str | Path, tokenizer: str | Path | None = None) -> Path:
    checkpoint = Path(checkpoint)
    state = read_lightning_checkpoint(checkpoint)
    model = build_model(checkpoint_config(state, str(checkpoint)))
    load_weights(model, model_state(state, str(checkpoint)), str(checkpoint))
    if tokenizer is None:
        beside_run = checkpoint.resolve().parent.parent / "tokenizer.json"
        tokenizer = beside_run if beside_run.is_file() else None
    elif not Path(tokenizer).is_file():
        raise CheckpointError(f"--tokenizer {tokenizer}: no such file")
    folder = to_hf(model, folder)
    if tokenizer is not None:
        write_tokenizer_files(tokenizer, folder, model.config.max_position_embeddings)
    return folder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m cpt.export",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("checkpoint", help="a .ckpt file or sharded folder written by cpt.train")
    parser.add_argument("folder", help="output folder (created)")
    parser.add_argument("--tokenizer", default=None, help="tokenizer.json to copy along")
    args = parser.parse_args(argv)
    with reported():
        folder = export(args.checkpoint, args.folder, args.tokenizer)
    print(f"wrote {folder}")


if __name__ == "__main__":
    main()
