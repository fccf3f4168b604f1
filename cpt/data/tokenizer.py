"""Tokenizers: a `tokenizer.json` file, a hub id, or a byte-level BPE trained here (`bpe:<vocab>`).

A hub id is resolved only when a config names one; `bpe:` needs no download at all, which is what
the embedded demo uses.

A tokenizer may put a start token before every text (Llama's `<s>`, Llama 3's
`<|begin_of_text|>`): its own post-processor says so, or the `add_bos_token` of a
`tokenizer_config.json` beside it, which is applied to the post-processor when the tokenizer is
loaded. Preparation and evaluation then both begin every document with it (`start_id`), as
`transformers` encodes text with that tokenizer.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from cpt.data.shards import is_prepared
from cpt.data.sources import SourceSpec, documents
from cpt.data.sources import fingerprint as source_fingerprint
from cpt.errors import UserError
from cpt.files import written_atomically

EOD_CANDIDATES = ("<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>")
SPECIAL_TOKENS = ["<|endoftext|>", "<|padding|>"]


class TokenizerError(UserError, ValueError):
    """A tokenizer that cannot be loaded or lacks an end-of-document token."""


def bpe_vocab_size(spec: str) -> int | None:
    """`bpe:4096` -> 4096; any other spec -> None."""
    if not spec.startswith("bpe:"):
        return None
    try:
        size = int(spec.removeprefix("bpe:"))
    except ValueError:
        raise TokenizerError(
            f"tokenizer {spec!r}: expected bpe:<vocab size>, e.g. bpe:4096"
        ) from None
    if size < 300:
        raise TokenizerError(
            f"tokenizer {spec!r}: vocab size must be at least 300 (256 bytes + merges)"
        )
    return size


def train_bpe(texts: Iterable[str], vocab_size: int, path: Path) -> Tokenizer:
    """Train a byte-level BPE (GPT-2/Pythia style) and write it atomically to `path`."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=True,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    with written_atomically(path) as tmp:
        tokenizer.save(str(tmp))
    return tokenizer


def load_tokenizer(spec: str) -> Tokenizer:
    """A `tokenizer.json` path, a folder holding one, or a hub id (`name[@revision]`), with the
    start token its `tokenizer_config.json` asks for."""
    path = Path(spec).expanduser()
    if path.is_dir():
        path = path / "tokenizer.json"
    if path.is_file():
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as err:
            raise TokenizerError(f"{path}: not a tokenizer.json file ({err})") from None
        config = path.with_name("tokenizer_config.json")
        return with_config(tokenizer, _read_config(config) if config.is_file() else {}, config)
    if spec.startswith((".", "/", "~")) or spec.endswith(".json") or spec.count("/") != 1:
        raise TokenizerError(
            f"tokenizer {spec!r}: no such file; expected a tokenizer.json path, a hub id or bpe:<vocab>"
        )
    name, _, revision = spec.partition("@")
    tokenizer = Tokenizer.from_pretrained(name, revision=revision or "main")
    from huggingface_hub import hf_hub_download  # only when a config names a hub id

    try:
        config = Path(hf_hub_download(name, "tokenizer_config.json", revision=revision or None))
    except Exception:  # a tokenizer without a config: its post-processor decides alone
        return tokenizer
    return with_config(tokenizer, _read_config(config), config)


def _read_config(path: Path) -> dict:
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise TokenizerError(f"{path}: not a JSON tokenizer config ({err})") from None
    if not isinstance(config, dict):
        raise TokenizerError(f"{path}: expected a JSON object (a tokenizer config)")
    return config


def _token_text(value: object) -> str | None:
    """A special token as a tokenizer config writes it: a string or {"content": ...}."""
    return value.get("content") if isinstance(value, dict) else value  # type: ignore[return-value]


def with_config(tokenizer: Tokenizer, config: dict, source: Path | str = "") -> Tokenizer:
    """The tokenizer, adding or dropping the start token as `config["add_bos_token"]` says (as
    `transformers` does); without that key, as its post-processor does."""
    add = config.get("add_bos_token")
    if add is None or bool(add) == (start_id(tokenizer) is not None):
        return tokenizer
    if not add:
        tokenizer.post_processor = processors.TemplateProcessing(single="$A", pair="$A $B")
        return tokenizer
    bos = _token_text(config.get("bos_token"))
    bos_id = tokenizer.token_to_id(bos) if isinstance(bos, str) else None
    if bos_id is None:
        raise TokenizerError(
            f"{source}: add_bos_token is true but bos_token {bos!r} is not in the tokenizer's "
            "vocabulary; expected the start token's text"
        )
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
    )
    return tokenizer


def eod_id(tokenizer: Tokenizer) -> int:
    """The token appended after every document."""
    for token in EOD_CANDIDATES:
        token_id = tokenizer.token_to_id(token)
        if token_id is not None:
            return token_id
    raise TokenizerError(
        f"the tokenizer has no end-of-document token; expected one of {EOD_CANDIDATES}"
    )


def start_id(tokenizer: Tokenizer) -> int | None:
    """The token the tokenizer puts before every text, or None (GPT-NeoX, Pythia)."""
    plain = tokenizer.encode("a", add_special_tokens=False).ids
    full = tokenizer.encode("a", add_special_tokens=True).ids
    if len(full) > len(plain) and full[1 : 1 + len(plain)] == plain:
        return full[0]
    return None


def tokenizer_hash(tokenizer: Tokenizer) -> str:
    """Identity of a tokenizer's behaviour, stored in every prepared dataset's meta.json."""
    return hashlib.sha256(tokenizer.to_str().encode()).hexdigest()


def tokenizer_file(spec: str, root: Path, sources: Iterable[SourceSpec]) -> Path | None:
    """Where the tokenizer `spec` lives: a file, or for `bpe:<n>` the cache of the one trained on
    `sources` (by their fingerprints and document limits) under `root/tokenizers`; None: a hub id."""
    size = bpe_vocab_size(spec)
    if size is None:
        path = Path(spec).expanduser()
        return path / "tokenizer.json" if path.is_dir() else (path if path.is_file() else None)
    key = json.dumps(sorted((source_fingerprint(s), getattr(s, "max_docs", None)) for s in sources))
    return root / "tokenizers" / f"bpe{size}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


def resolve_tokenizer(spec: str, root: Path, sources: Iterable[SourceSpec]) -> Tokenizer:
    """The tokenizer `spec` names; `bpe:<n>` is trained once on the raw `sources` (prepared
    folders are left out: their tokens exist already) and cached."""
    sources = [s for s in sources if not is_prepared(s.source)]
    path = tokenizer_file(spec, root, sources)
    if bpe_vocab_size(spec) is not None and not path.is_file():
        texts = (t for s in sources for t in documents(s, getattr(s, "max_docs", None)))
        return train_bpe(texts, bpe_vocab_size(spec), path)
    return load_tokenizer(str(path) if path else spec)
