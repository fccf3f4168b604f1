"""The LightningDataModule: a tokenizer, one prepared folder per domain, train and val loaders.

Every domain is validated (one validation dataloader each, in config order); one of them is trained
on. The data package knows nothing of the model: the entry point checks the tokenizer's vocabulary
against the model's through `vocab_size`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import lightning as L
import torch
from tokenizers import Tokenizer
from torch.utils.data import DataLoader

from cpt.data.corpora import SourceError, documents, source_fingerprint
from cpt.data.tokenizer import bpe_vocab_size, load_tokenizer, train_bpe
from cpt.data.tokens import DomainSpec, PreparedDomain, prepare_domain
from cpt.data.windows import TokenWindows


class CPTDataModule(L.LightningDataModule):
    def __init__(
        self,
        dir: str,
        tokenizer: str,
        domains: dict[str, DomainSpec],
        train: str,
        seq_len: int,
        micro_batch_size: int,
        num_workers: int = 0,
        seed: int = 1234,
    ) -> None:
        super().__init__()
        if train not in domains:
            raise SourceError(f"data.train={train!r} is not a domain; expected one of {list(domains)}")
        self.root = Path(dir).expanduser()
        self.tokenizer_spec = tokenizer
        self.domains = domains
        self.train_domain = train
        self.seq_len = seq_len
        self.micro_batch_size = micro_batch_size
        self.num_workers = num_workers
        self.seed = seed
        self._tokenizer: Tokenizer | None = None
        self.prepared: dict[str, PreparedDomain] = {}

    @property
    def domain_names(self) -> list[str]:
        return list(self.domains)

    def tokenizer_path(self) -> Path | None:
        """Where a locally trained tokenizer lives (None for a file or hub tokenizer)."""
        size = bpe_vocab_size(self.tokenizer_spec)
        if size is None:
            path = Path(self.tokenizer_spec).expanduser()
            return path / "tokenizer.json" if path.is_dir() else (path if path.is_file() else None)
        key = json.dumps(
            sorted((d.source, d.text_field, d.max_docs, source_fingerprint(d.source)) for d in self.domains.values())
        )
        return self.root / "tokenizers" / f"bpe{size}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"

    @property
    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            size = bpe_vocab_size(self.tokenizer_spec)
            path = self.tokenizer_path()
            if size is not None and not path.is_file():
                texts = (t for d in self.domains.values() for t in documents(d.source, d.text_field, d.max_docs))
                self._tokenizer = train_bpe(texts, size, path)
            else:
                self._tokenizer = load_tokenizer(str(path) if path else self.tokenizer_spec)
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def prepare_data(self) -> None:
        for name, spec in self.domains.items():
            self.prepared[name] = prepare_domain(self.root, spec, self.tokenizer, name)

    def setup(self, stage: str | None = None) -> None:
        if len(self.prepared) < len(self.domains):
            self.prepare_data()  # reuses the folders local rank 0 wrote
        for name, prepared in self.prepared.items():
            windows = len(prepared.tokens("val")) // self.seq_len
            if windows == 0:
                raise SourceError(
                    f"domain {name!r}: validation set has fewer tokens than seq_len={self.seq_len}; "
                    "raise val_tokens"
                )

    def train_dataloader(self) -> DataLoader:
        data = TokenWindows(self.prepared[self.train_domain].tokens("train"), self.seq_len)
        if len(data) < self.micro_batch_size:
            raise SourceError(
                f"domain {self.train_domain!r}: {len(data)} training windows of {self.seq_len} tokens; "
                f"expected at least micro_batch_size={self.micro_batch_size}"
            )
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            data,
            batch_size=self.micro_batch_size,
            shuffle=True,
            drop_last=True,
            generator=generator,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> list[DataLoader]:
        return [
            DataLoader(
                TokenWindows(self.prepared[name].tokens("val"), self.seq_len),
                batch_size=self.micro_batch_size,
                num_workers=self.num_workers,
            )
            for name in self.domain_names
        ]
