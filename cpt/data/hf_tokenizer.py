"""The tokenizer files of an exported Hugging Face folder, so that `AutoTokenizer` and `generate`
know the special tokens: `tokenizer.json`, `tokenizer_config.json`, `special_tokens_map.json` and
`generation_config.json`.

Which token is which comes from the tokenizer itself, by the rules preparation uses: the
end-of-document token is `eos`; the start token its post-processor adds is `bos` (without one,
`bos` is the end-of-document token, as Pythia's own config has it); `pad` is a padding token of
the vocabulary, else `eos`. The config leaves `add_bos_token` to the post-processor inside
`tokenizer.json`, so `transformers`, lm-eval and our preparation encode text the same way.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer

from cpt.data.tokenizer import eod_id, load_tokenizer, start_id

PAD_CANDIDATES = ("<|padding|>", "<pad>", "[PAD]", "<|finetune_right_pad_id|>")


def special_tokens(tokenizer: Tokenizer) -> dict[str, tuple[str, int]]:
    """{"bos"|"eos"|"pad": (text, id)} of a tokenizer, as an exported folder declares them."""
    eos = eod_id(tokenizer)
    start = start_id(tokenizer)
    pad = next(
        (i for i in map(tokenizer.token_to_id, PAD_CANDIDATES) if i is not None and i != eos),
        eos,
    )
    ids = {"bos": eos if start is None else start, "eos": eos, "pad": pad}
    return {role: (str(tokenizer.id_to_token(i)), i) for role, i in ids.items()}


def write_tokenizer_files(tokenizer_file: str | Path, folder: Path, max_length: int) -> None:
    """The four files beside an exported model's weights."""
    tokenizer = load_tokenizer(str(tokenizer_file))  # with its own config's start token applied
    tokenizer.save(str(folder / "tokenizer.json"))
    tokens = special_tokens(tokenizer)
    names = {f"{role}_token": text for role, (text, _) in tokens.items()}
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **names,
        "model_max_length": max_length,
        "clean_up_tokenization_spaces": False,  # decode as `tokenizers` does
    }
    generation = {f"{role}_token_id": i for role, (_, i) in tokens.items()}
    for name, values in (
        ("tokenizer_config.json", config),
        ("special_tokens_map.json", names),
        ("generation_config.json", generation),
    ):
        (folder / name).write_text(json.dumps(values, indent=2) + "\n")
