"""Tokenizers: a `tokenizer.json` file, a hub id, or a byte-level BPE trained here (`bpe:<vocab>`).

A hub id is resolved only when a config names one; `bpe:` needs no download at all, which is what
the embedded demo uses.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

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
    """A `tokenizer.json` path, a folder holding one, or a hub id (`name[@revision]`)."""
    path = Path(spec).expanduser()
    if path.is_dir():
        path = path / "tokenizer.json"
    if path.is_file():
        try:
            return Tokenizer.from_file(str(path))
        except Exception as err:
            raise TokenizerError(f"{path}: not a tokenizer.json file ({err})") from None
    if spec.startswith((".", "/", "~")) or spec.endswith(".json") or spec.count("/") != 1:
        raise TokenizerError(
            f"tokenizer {spec!r}: no such file; expected a tokenizer.json path, a hub id or bpe:<vocab>"
        )
    name, _, revision = spec.partition("@")
    return Tokenizer.from_pretrained(name, revision=revision or "main")


def eod_id(tokenizer: Tokenizer) -> int:
    """The token appended after every document."""
    for token in EOD_CANDIDATES:
        token_id = tokenizer.token_to_id(token)
        if token_id is not None:
            return token_id
    raise TokenizerError(
        f"the tokenizer has no end-of-document token; expected one of {EOD_CANDIDATES}"
    )


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
