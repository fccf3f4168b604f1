"""The `data` config group's schema: domains (a source, its held-out split, how it trains) and the
batch shape. These dataclasses are Hydra's structured configs and check themselves, so a bad value
stops at compose time with one line naming the key; `DomainSpec` is also what preparation reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING

from cpt.data.megatron import PythiaSteps, open_indexed
from cpt.data.quality import QualityRule
from cpt.data.shards import is_prepared
from cpt.data.sources import SourceError, SourceSpec, check_source


@dataclass
class DomainSpec(SourceSpec):
    """`data.domains.<name>`: the source's fields, then how much of it and how it trains."""

    source: str = MISSING  # python-docs | python-code | package-docs | files (path or glob) | hf:<dataset> | megatron:<prefix> | a prepared folder
    max_docs: int | None = None  # use only the first documents of the source
    val_tokens: int = 32768  # held-out documents, fixed across runs
    # training only (the prepared files do not depend on these):
    max_tokens: int | None = None  # train on a fixed seeded subset of this many tokens (epochs)
    part: list[int] | None = None  # [k, n]: train on the k-th of n IID parts of the windows
    seen_by: str | None = None  # a checkpoint: replay only the windows that run trained on
    quality: QualityRule = field(default_factory=QualityRule)  # keep: train on the best windows
    steps: PythiaSteps = field(
        default_factory=PythiaSteps
    )  # megatron: Pythia's steps [start, stop)

    def __post_init__(self) -> None:
        if self.source is MISSING or self.source == "???":
            return  # a schema default; OmegaConf reports the missing value by its key
        if self.max_docs is not None and self.max_docs < 2:
            raise ValueError(f"max_docs: expected at least 2, got {self.max_docs}")
        if self.val_tokens < 1:
            raise ValueError(f"val_tokens: expected a positive count, got {self.val_tokens}")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"max_tokens: expected a positive count, got {self.max_tokens}")
        if self.part is not None:
            part = list(self.part)
            ints = len(part) == 2 and all(isinstance(x, int) for x in part)
            if not (ints and part[1] >= 2 and 0 <= part[0] < part[1]):
                raise ValueError(
                    f"part: expected [k, n] with n >= 2 and 0 <= k < n (the k-th of n IID parts "
                    f"of the training windows), got {list(self.part)}"
                )
        if isinstance(self.steps, dict):
            self.steps = PythiaSteps(**self.steps)
        if self.steps.on:
            if self.kind != "megatron":
                raise ValueError(
                    f"steps: Pythia training steps select from a pre-shuffled Megatron file; "
                    f"expected source megatron:<prefix>, got {self.source!r}"
                )
            if self.max_docs is not None:
                raise ValueError("max_docs: not with steps (the steps select the sequences)")

    @property
    def step_range(self) -> PythiaSteps | None:
        """The Pythia steps this domain trains on, or None: every document."""
        return self.steps if self.steps.on else None

    def check_readable(self) -> None:
        """The files or dataset the source names exist (a look at the file system, no reading)."""
        if not is_prepared(self.source):
            try:
                check_source(self)
                if self.kind == "megatron":  # both files, an index that describes the .bin
                    open_indexed(self.source)
            except SourceError as err:
                raise SourceError(f"source: {err}") from None
        if self.seen_by is not None and not Path(self.seen_by).expanduser().exists():
            raise SourceError(f"seen_by: {self.seen_by}: no such checkpoint file or folder")


@dataclass
class DataConfig:
    dir: str = "data"  # prepared token files and trained tokenizers are cached here
    tokenizer: str = MISSING  # a tokenizer.json path, a hub id, or bpe:<vocab> trained here
    train: str | None = None  # shorthand for mixture {train: 1.0}
    mixture: Any = None  # {domain: weight}: training weights, e.g. replay
    domains: dict[str, DomainSpec] = field(default_factory=dict)
    seq_len: int = 128
    micro_batch_size: int = 16
    global_batch_size: int | None = None  # set: accumulate = global / (micro x devices), exactly
    num_workers: int = 0  # dataloader workers
    prepare_workers: int = 2  # tokenization processes
    shard_tokens: int = 268435456  # tokens per shard file (512 MB of uint16)
    document_aware: bool = False  # attention and positions restart at each document
    split_seed: int = 1234  # picks the held-out documents: a property of the data, not of the run

    def __post_init__(self) -> None:
        for key, low in (("split_seed", 0), ("num_workers", 0), ("prepare_workers", 1)):
            if getattr(self, key) < low:
                raise ValueError(f"{key}: expected a count >= {low}, got {getattr(self, key)}")
        if not self.domains:
            raise ValueError(
                "domains: no domain configured; expected at least one (name: {source: ...})"
            )
        if self.mixture is not None and not isinstance(self.mixture, dict):
            raise ValueError(
                f"mixture: expected a mapping {{domain: weight}}, got {self.mixture!r}"
            )
        if not self.mixture:
            if self.train is None:
                raise ValueError("train: no training domain; set data.train or data.mixture")
            if self.train not in self.domains:
                raise ValueError(
                    f"train: {self.train!r} is not a domain; expected one of {list(self.domains)}"
                )
        for name, weight in (self.mixture or {}).items():
            if name not in self.domains:
                raise ValueError(
                    f"mixture.{name}: not a domain; expected one of {list(self.domains)}"
                )
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
                raise ValueError(f"mixture.{name}: expected a weight >= 0, got {weight!r}")
        if self.mixture and sum(self.mixture.values()) <= 0:
            raise ValueError("mixture: all weights are zero; expected at least one positive weight")
        for key in ("seq_len", "micro_batch_size", "shard_tokens"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key}: expected a positive integer, got {getattr(self, key)}")
        for name, domain in self.domains.items():
            if domain.steps.on and domain.steps.seq_len != self.seq_len:
                raise ValueError(
                    f"domains.{name}.steps.seq_len: {domain.steps.seq_len}, but data.seq_len is "
                    f"{self.seq_len}; a window is one of the file's sequences: set them equal"
                )
            if domain.max_tokens is not None and domain.max_tokens < self.seq_len:
                raise ValueError(
                    f"domains.{name}.max_tokens: expected at least seq_len={self.seq_len}, "
                    f"got {domain.max_tokens}"
                )

    @property
    def weights(self) -> dict[str, float]:
        """The training mixture: `mixture`, or `{train: 1.0}`."""
        return dict(self.mixture or {}) or {self.train: 1.0}
