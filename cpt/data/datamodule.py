"""The LightningDataModule: tokenizer, one prepared dataset per domain, a mixture for training.

Every domain is validated (one validation dataloader each, in config order, over its fixed
held-out documents). Training draws from the mixture of domains named in `mixture` (weights), so
replay is "downstream: 0.95, upstream: 0.05". The mixture's state is the step, saved in every
checkpoint, so a resumed run continues with exactly the batches it would have seen. The data package
knows nothing of the model: the entry point checks the vocabulary through `vocab_size`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from tokenizers import Tokenizer
from torch.utils.data import DataLoader, Dataset

from cpt.data.config import DataConfig, DomainSpec
from cpt.data.mixture import Mixture, MixtureSource, cap_windows, part_windows
from cpt.data.prepare import check_compatible, dataset_path, prepare_domain
from cpt.data.shards import PreparedDomain, is_prepared, load_prepared
from cpt.data.sources import SourceError
from cpt.data.tokenizer import bpe_vocab_size, resolve_tokenizer, tokenizer_file
from cpt.data.windows import TokenWindows
from cpt.run.geometry import BatchGeometry


class MixtureDataset(Dataset):
    """Indexed by (source, window): the window's tensors plus the source id."""

    def __init__(self, windows: list[TokenWindows]) -> None:
        self.windows = windows

    def __len__(self) -> int:
        return sum(len(w) for w in self.windows)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        source, window = key
        item = self.windows[source][window]
        item["source"], item["window"] = torch.tensor(source), torch.tensor(window)
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
    """Built from the `data` config group and the run's one `BatchGeometry`.

    `seen` holds, per domain with `seen_by`, the datamodule state saved in that checkpoint (the
    entry point reads it: the data package never opens a model checkpoint).
    """

    def __init__(
        self,
        data: DataConfig,
        geometry: BatchGeometry | None = None,
        seed: int = 1234,
        seen: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        self.config = data
        self.root = Path(data.dir).expanduser()
        self.domains: dict[str, DomainSpec] = dict(data.domains)
        self.weights = data.weights
        self.geometry = geometry or BatchGeometry(data.micro_batch_size, 1, 1, 1, data.seq_len, 1)
        if (self.geometry.micro_batch_size, self.geometry.seq_len) != (
            data.micro_batch_size,
            data.seq_len,
        ):
            raise ValueError("geometry: micro batch and seq_len differ from the data config")
        self.seq_len = data.seq_len
        self.micro_batch_size = data.micro_batch_size
        self.seed = seed
        self.seen = seen or {}
        self._tokenizer: Tokenizer | None = None
        self.selectors: dict[str, Callable[[TokenWindows], np.ndarray]] = {}
        self.selected: dict[str, np.ndarray] = {}  # the windows the selectors chose
        self.prepared: dict[str, PreparedDomain] = {}
        self.mixture: Mixture | None = None
        self._start_step = 0

    # ---- tokenizer --------------------------------------------------------------------------------
    @property
    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            self._tokenizer = resolve_tokenizer(
                self.config.tokenizer, self.root, self.domains.values()
            )
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
            if is_prepared(spec.source):
                prepared = load_prepared(Path(spec.source).expanduser())
                self.prepared[name] = check_compatible(prepared, self.tokenizer)
            else:
                self.prepared[name] = prepare_domain(
                    self.root,
                    spec,
                    self.tokenizer,
                    name,
                    workers=self.config.prepare_workers,
                    seed=self.config.split_seed,  # the held-out documents: never the run's seed
                    shard_tokens=self.config.shard_tokens,
                )

    def wait_prepared(self, poll_s: float = 2.0, timeout_s: float = 48 * 3600) -> None:
        """On every rank but global rank 0: wait until rank 0 has prepared the tokenizer and every
        domain (the files this rank's `prepare_data` would otherwise write itself)."""
        started = time.monotonic()
        while not self._is_prepared():
            if time.monotonic() - started > timeout_s:
                raise SourceError(
                    f"data.dir: {self.root}: global rank 0 did not prepare the data within "
                    f"{timeout_s:.0f} s"
                )
            time.sleep(poll_s)
        self.prepare_data()  # reads what rank 0 wrote

    def _is_prepared(self) -> bool:
        raw = [s for s in self.domains.values() if not is_prepared(s.source)]
        path = tokenizer_file(self.config.tokenizer, self.root, raw)
        if bpe_vocab_size(self.config.tokenizer) is not None and not path.is_file():
            return False
        return all(
            is_prepared(
                dataset_path(
                    self.root,
                    spec,
                    self.tokenizer,
                    self.config.split_seed,
                    self.config.shard_tokens,
                )
            )
            for spec in raw
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
            prepared.tokens(split),
            self.seq_len,
            prepared.offsets(split),
            self.config.document_aware,
            prepared.window_stride,
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
            domain = self.domains[name]
            allowed = self.selected.get(name)
            if domain.part is not None:
                k, n = domain.part
                part = part_windows(windows, k, n, self.prepared[name].name)
                allowed = part if allowed is None else np.intersect1d(allowed, part)
            if domain.max_tokens is not None:
                pool = windows if allowed is None else len(allowed)
                cap = cap_windows(pool, max(1, domain.max_tokens // self.seq_len), self.seed, name)
                allowed = cap if allowed is None else allowed[cap]
            if name in self.seen:
                try:
                    allowed = seen_windows(self.seen[name], self.prepared[name].name, self.seq_len)
                except SourceError as err:
                    raise SourceError(f"data.domains.{name}.{err}") from None
            if windows == 0 and weight > 0:
                raise SourceError(
                    f"domain {name!r}: no training window of {self.seq_len + 1} tokens"
                )
            sources.append(MixtureSource(name, weight, windows, allowed))
        try:
            return Mixture(sources, self.geometry.global_batch, self.seed)
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

    # ---- loaders ----------------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        assert self.mixture is not None, "setup() first"
        g = self.geometry
        if self.trainer is not None and (
            self.trainer.world_size,
            self.trainer.accumulate_grad_batches,
        ) != (g.world_size, g.accumulate):
            raise RuntimeError(
                f"the trainer runs {self.trainer.world_size} processes x accumulation "
                f"{self.trainer.accumulate_grad_batches}, the batch geometry says "
                f"{g.world_size} x {g.accumulate}"
            )
        rank = self.trainer.global_rank if self.trainer is not None else 0
        start = self.trainer.global_step if self.trainer is not None else self._start_step
        dataset = MixtureDataset([self._windows(name, "train") for name in self.weights])
        batches = MixtureBatches(
            self.mixture, start, self.micro_batch_size, rank, g.world_size, g.accumulate
        )
        return DataLoader(dataset, batch_sampler=batches, num_workers=self.config.num_workers)

    def val_dataloader(self) -> list[DataLoader]:
        return [
            DataLoader(
                self._windows(name, "val"),
                batch_size=self.micro_batch_size,
                num_workers=self.config.num_workers,
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
            # what each source gave up to this step, whatever weights (replay schedule) led there
            "drawn": [int(n) for n in self.mixture.consumed(step)],
            "splits": self.splits(),
            "sources": [
                {
                    "name": s.name,
                    "dataset": self.prepared[s.name].name,
                    "weight": s.weight,
                    "num_windows": s.num_windows,
                    "max_tokens": self.domains[s.name].max_tokens,
                    "restricted": s.name in self.seen
                    or s.name in self.selected
                    or self.domains[s.name].part is not None,
                }
                for s in self.mixture.sources
            ],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._start_step = int(state.get("step", 0))

    def splits(self) -> dict[str, dict[str, Any]]:
        """Per domain, which documents this run's prepared dataset holds out (for a later run)."""
        return {
            name: {
                "dataset": prepared.name,
                "source": prepared.meta.get("spec"),
                "tokenizer": prepared.meta.get("tokenizer_hash"),
                "split_seed": prepared.meta.get("split_seed"),  # None: prepared before it was kept
            }
            for name, prepared in self.prepared.items()
        }

    def check_held_out(self, upstream: dict[str, Any] | None) -> None:
        """Stop when a domain's held-out documents were training documents of the run that wrote
        the starting checkpoint (`upstream`: its datamodule state): the same source and tokenizer
        split another way. Call after `prepare_data`."""
        trained = {s["dataset"] for s in (upstream or {}).get("sources", [])}
        before = [s for s in (upstream or {}).get("splits", {}).values() if s["dataset"] in trained]
        for name, ours in self.splits().items():
            for split in before:
                same_data = (split["source"], split["tokenizer"]) == (
                    ours["source"],
                    ours["tokenizer"],
                )
                seeds = (split.get("split_seed"), ours["split_seed"])
                same_split = split["dataset"] == ours["dataset"] or (
                    None not in seeds and seeds[0] == seeds[1]
                )
                if same_data and not same_split:
                    raise SourceError(
                        f"data.domains.{name}: its held-out documents are split otherwise than "
                        f"in the run that wrote the starting checkpoint, which trained on "
                        f"{split['dataset']}: some of them were its training documents; keep "
                        "that run's data.split_seed and val_tokens"
                    )


def seen_windows(state: dict[str, Any], dataset: str, seq_len: int) -> np.ndarray:
    """The windows of `dataset` that a run trained on, from its saved datamodule `state`."""
    sources = state.get("sources", [])
    match = [i for i, s in enumerate(sources) if s["dataset"] == dataset]
    if not match:
        raise SourceError(f"seen_by: that run did not train on {dataset}")
    if state["seq_len"] != seq_len:
        raise SourceError(
            f"seen_by: that run trained with seq_len {state['seq_len']}, this run uses {seq_len}"
        )
    if sources[match[0]]["restricted"]:
        raise SourceError("seen_by: that run itself replayed a restricted set; name its source run")
    if "drawn" not in state:
        raise SourceError(
            "seen_by: that checkpoint does not record how many windows each source gave "
            "(written by an older cpt); continue its run for a step to write one that does"
        )
    count = int(state["drawn"][match[0]])
    if count == 0:
        raise SourceError(f"seen_by: that run drew no training window of {dataset}")
    rebuilt = []
    for s in sources:
        allowed = None
        if s["max_tokens"] is not None:
            allowed = cap_windows(
                s["num_windows"], max(1, s["max_tokens"] // seq_len), state["seed"], s["name"]
            )
        rebuilt.append(MixtureSource(s["name"], s["weight"], s["num_windows"], allowed))
    previous = Mixture(rebuilt, state["global_batch"], state["seed"])
    return previous.drawn_windows(match[0], count)
