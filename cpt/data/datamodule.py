"""The LightningDataModule: tokenizer, one prepared dataset per domain, a mixture for training.

Every domain is validated (one validation dataloader each, in config order, over its fixed
held-out documents). Training draws from the mixture of domains named in `mixture` (weights), so
replay is "downstream: 0.95, upstream: 0.05". The mixture's state is the step, saved in every
checkpoint, so a resumed run continues with exactly the batches it would have seen. The data package
knows nothing of the model: the entry point checks the vocabulary through `vocab_size`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from tokenizers import Tokenizer
from torch.utils.data import DataLoader, Dataset

from cpt.data.mixture import Mixture, MixtureSource, cap_windows
from cpt.data.prepare import DomainSpec, check_compatible, prepare_domain
from cpt.data.shards import PreparedDomain, is_prepared, load_prepared
from cpt.data.sources import SourceError, SourceSpec, documents
from cpt.data.sources import fingerprint as source_fingerprint
from cpt.data.tokenizer import bpe_vocab_size, load_tokenizer, train_bpe
from cpt.data.windows import TokenWindows


@dataclass(frozen=True)
class TrainingOptions:
    """How a domain takes part in training (none of it changes the prepared files)."""

    max_tokens: int | None = None  # cap: a fixed seeded subset of windows, repeated for epochs
    seen_by: str | None = None  # a checkpoint: replay only the windows that run trained on


class MixtureDataset(Dataset):
    """Indexed by (source, window): the window's tensors plus the source id."""

    def __init__(self, windows: list[TokenWindows]) -> None:
        self.windows = windows

    def __len__(self) -> int:
        return sum(len(w) for w in self.windows)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        source, window = key
        item = self.windows[source][window]
        item["source"] = torch.tensor(source)
        return item


class MixtureBatches:
    """A DataLoader `batch_sampler` over this rank's micro-batches, from a start step, forever."""

    def __init__(
        self,
        mixture: Mixture,
        start_step: int,
        micro_batch: int,
        rank: int,
        world: int,
        accumulate: int,
    ):
        self.args = (start_step, micro_batch, rank, world, accumulate)
        self.mixture = mixture

    def __iter__(self):
        return self.mixture.micro_batches(*self.args)


class CPTDataModule(L.LightningDataModule):
    def __init__(
        self,
        dir: str,
        tokenizer: str,
        domains: dict[str, DomainSpec],
        mixture: dict[str, float],
        seq_len: int,
        micro_batch_size: int,
        num_workers: int = 0,
        seed: int = 1234,
        document_aware: bool = False,
        prepare_workers: int = 1,
        training: dict[str, TrainingOptions] | None = None,
    ) -> None:
        super().__init__()
        unknown = [name for name in mixture if name not in domains]
        if unknown:
            raise SourceError(
                f"data.mixture: {unknown[0]!r} is not a domain; expected one of {list(domains)}"
            )
        self.root = Path(dir).expanduser()
        self.tokenizer_spec = tokenizer
        self.domains = domains
        self.weights = dict(mixture)
        self.seq_len = seq_len
        self.micro_batch_size = micro_batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.document_aware = document_aware
        self.prepare_workers = prepare_workers
        self.training = training or {}
        self._tokenizer: Tokenizer | None = None
        self.selectors: dict[str, Callable[[TokenWindows], np.ndarray]] = {}
        self.selected: dict[str, np.ndarray] = {}  # the windows the selectors chose
        self.prepared: dict[str, PreparedDomain] = {}
        self.mixture: Mixture | None = None
        self._start_step = 0

    @classmethod
    def from_config(cls, data: Any, seed: int) -> CPTDataModule:
        """From the `data` config group (see `cpt.config.DataConfig`)."""
        domains, training = {}, {}
        for name, d in data.domains.items():
            source = SourceSpec(d.source, d.text_field, d.hf_config, d.split, d.streaming)
            domains[name] = DomainSpec(source, d.max_docs, d.val_tokens, seed, data.shard_tokens)
            training[name] = TrainingOptions(d.max_tokens, d.seen_by)
        return cls(
            dir=data.dir,
            tokenizer=data.tokenizer,
            domains=domains,
            mixture=dict(data.mixture or {}) or {data.train: 1.0},
            seq_len=data.seq_len,
            micro_batch_size=data.micro_batch_size,
            num_workers=data.num_workers,
            seed=seed,
            document_aware=data.document_aware,
            prepare_workers=data.prepare_workers,
            training=training,
        )

    # ---- tokenizer --------------------------------------------------------------------------------
    def tokenizer_path(self) -> Path | None:
        """Where a locally trained tokenizer lives (None for a file or hub tokenizer)."""
        size = bpe_vocab_size(self.tokenizer_spec)
        if size is None:
            path = Path(self.tokenizer_spec).expanduser()
            return path / "tokenizer.json" if path.is_dir() else (path if path.is_file() else None)
        key = json.dumps(
            sorted((source_fingerprint(d.source), d.max_docs) for d in self._raw_domains().values())
        )
        return (
            self.root
            / "tokenizers"
            / f"bpe{size}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"
        )

    def _raw_domains(self) -> dict[str, DomainSpec]:
        return {n: d for n, d in self.domains.items() if not is_prepared(d.source.source)}

    @property
    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            size = bpe_vocab_size(self.tokenizer_spec)
            path = self.tokenizer_path()
            if size is not None and not path.is_file():
                texts = (
                    t for d in self._raw_domains().values() for t in documents(d.source, d.max_docs)
                )
                self._tokenizer = train_bpe(texts, size, path)
            else:
                self._tokenizer = load_tokenizer(str(path) if path else self.tokenizer_spec)
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def domain_names(self) -> list[str]:
        return list(self.domains)

    # ---- preparation ------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        if len(self.prepared) == len(self.domains):
            return  # Lightning calls this on every validate() and fit(): fingerprint once
        for name, spec in self.domains.items():
            if is_prepared(spec.source.source):
                prepared = load_prepared(Path(spec.source.source).expanduser())
                self.prepared[name] = check_compatible(prepared, self.tokenizer)
            else:
                self.prepared[name] = prepare_domain(
                    self.root, spec, self.tokenizer, name, workers=self.prepare_workers
                )

    def setup(self, stage: str | None = None) -> None:
        if self.mixture is not None:
            return  # already set up by an earlier validate() or fit() of the same run
        self.prepare_data()  # reuses the folders local rank 0 wrote
        for name, prepared in self.prepared.items():
            if len(prepared.tokens("val")) <= self.seq_len:
                raise SourceError(
                    f"domain {name!r}: validation set has fewer tokens than seq_len={self.seq_len}; "
                    "raise val_tokens"
                )
        for name, selector in self.selectors.items():
            if name not in self.selected:
                chosen = selector(self.train_windows(name))
                self.selected[name] = np.asarray(chosen, dtype=np.int64)
        self.mixture = self._build_mixture()

    def _windows(self, name: str, split: str) -> TokenWindows:
        prepared = self.prepared[name]
        return TokenWindows(
            prepared.tokens(split), self.seq_len, prepared.offsets(split), self.document_aware
        )

    def train_windows(self, name: str) -> TokenWindows:
        """The training windows of a prepared domain (call `prepare_data` first)."""
        return self._windows(name, "train")

    def select_with(self, name: str, selector: Callable[[TokenWindows], np.ndarray]) -> None:
        """Train on the windows of `name` that `selector` picks (e.g. by a reference model's loss).

        It runs in `setup`, on every rank once the prepared data is there.
        """
        if name not in self.domains:
            raise SourceError(f"{name!r} is not a domain; expected one of {self.domain_names}")
        self.selectors[name] = selector

    def _build_mixture(self) -> Mixture:
        sources = []
        for name, weight in self.weights.items():
            windows = len(self._windows(name, "train"))
            options = self.training.get(name, TrainingOptions())
            allowed = self.selected.get(name)
            if options.max_tokens is not None:
                pool = windows if allowed is None else len(allowed)
                cap = cap_windows(pool, max(1, options.max_tokens // self.seq_len), self.seed, name)
                allowed = cap if allowed is None else allowed[cap]
            if options.seen_by is not None:
                allowed = seen_windows(options.seen_by, self.prepared[name].name, self.seq_len)
            if windows == 0 and weight > 0:
                raise SourceError(
                    f"domain {name!r}: no training window of {self.seq_len + 1} tokens"
                )
            sources.append(MixtureSource(name, weight, windows, allowed))
        world, accumulate = self._world_and_accumulate()
        try:
            return Mixture(sources, self.micro_batch_size * world * accumulate, self.seed)
        except ValueError as err:
            raise SourceError(f"data.mixture: {err}") from None

    def include_source(self, name: str) -> Mixture:
        """Make `name` a mixture source (weight 0 until a callback changes it); the mixture."""
        if name not in self.domains:
            raise SourceError(f"{name!r} is not a domain; expected one of {self.domain_names}")
        if name not in self.weights:
            self.weights[name] = 0.0
            self.mixture = self._build_mixture()
        return self.mixture

    def _world_and_accumulate(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 1, 1
        return trainer.world_size, trainer.accumulate_grad_batches

    # ---- loaders ----------------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        assert self.mixture is not None, "setup() first"
        world, accumulate = self._world_and_accumulate()
        rank = self.trainer.global_rank if self.trainer is not None else 0
        start = self.trainer.global_step if self.trainer is not None else self._start_step
        dataset = MixtureDataset([self._windows(name, "train") for name in self.weights])
        batches = MixtureBatches(
            self.mixture, start, self.micro_batch_size, rank, world, accumulate
        )
        return DataLoader(dataset, batch_sampler=batches, num_workers=self.num_workers)

    def val_dataloader(self) -> list[DataLoader]:
        return [
            DataLoader(
                self._windows(name, "val"),
                batch_size=self.micro_batch_size,
                num_workers=self.num_workers,
            )
            for name in self.domain_names
        ]

    # ---- state, for exact resume and for replay of seen data ---------------------------------------
    def tokens_consumed(self, step: int) -> dict[str, int]:
        """Training tokens taken from every mixture source in the first `step` optimizer steps."""
        assert self.mixture is not None
        return {
            n: int(c) * self.seq_len
            for n, c in zip(self.mixture.names, self.mixture.consumed(step))
        }

    def mixture_weights(self, step: int) -> dict[str, float]:
        """The normalised mixture weights in force at `step` (after any replay schedule)."""
        assert self.mixture is not None
        return {
            n: round(float(w), 6) for n, w in zip(self.mixture.names, self.mixture.weights_at(step))
        }

    def state_dict(self) -> dict[str, Any]:
        if self.mixture is None:
            return {}
        step = self.trainer.global_step if self.trainer is not None else self._start_step
        return {
            "step": step,
            "seed": self.seed,
            "seq_len": self.seq_len,
            "global_batch": self.mixture.global_batch,
            "sources": [
                {
                    "name": s.name,
                    "dataset": self.prepared[s.name].name,
                    "weight": s.weight,
                    "num_windows": s.num_windows,
                    "max_tokens": self.training.get(s.name, TrainingOptions()).max_tokens,
                    "restricted": self.training.get(s.name, TrainingOptions()).seen_by is not None
                    or s.name in self.selected,
                }
                for s in self.mixture.sources
            ],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._start_step = int(state.get("step", 0))


def seen_windows(checkpoint: str, dataset: str, seq_len: int) -> np.ndarray:
    """The windows of `dataset` that the run which wrote `checkpoint` trained on."""
    from cpt.checkpoints import read_lightning_checkpoint

    state = read_lightning_checkpoint(checkpoint).get(CPTDataModule.__qualname__) or {}
    sources = state.get("sources", [])
    match = [i for i, s in enumerate(sources) if s["dataset"] == dataset]
    if not match:
        raise SourceError(f"seen_by {checkpoint}: that run did not train on {dataset}")
    if state["seq_len"] != seq_len:
        raise SourceError(
            f"seen_by {checkpoint}: trained with seq_len {state['seq_len']}, this run uses {seq_len}"
        )
    if sources[match[0]]["restricted"]:
        raise SourceError(
            f"seen_by {checkpoint}: that run itself replayed a restricted set; name its source run"
        )
    rebuilt = []
    for s in sources:
        allowed = None
        if s["max_tokens"] is not None:
            allowed = cap_windows(
                s["num_windows"], max(1, s["max_tokens"] // seq_len), state["seed"], s["name"]
            )
        rebuilt.append(MixtureSource(s["name"], s["weight"], s["num_windows"], allowed))
    previous = Mixture(rebuilt, state["global_batch"], state["seed"])
    return previous.seen_windows(match[0], state["step"])
