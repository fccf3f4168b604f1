"""Select a high-quality sub-corpus by a reference model's loss (Guo et al. 2024, mitigation 2).

Every training window of a domain (or a seeded pool of them) is scored by a `score` callable, the
mean next-token loss of a reference model; the `keep` fraction with the lowest loss (`prefer: low`:
fluent text close to what the reference knows, the perplexity filter of CCNet, Wenzek et al. 2020)
or the highest is kept. The scores are cached next to the prepared data, keyed by the dataset, the
window length and the reference, so a sweep scores once. The training mixture then draws only from
the kept windows; validation is untouched. This module knows nothing of models: the entry point
hands it the scorer.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from cpt.data.mixture import cap_windows
from cpt.data.windows import TokenWindows
from cpt.files import written_atomically

# a collated batch of windows (input_ids, and position_ids/segment_ids when document-aware) ->
# the mean next-token loss of every window, shape [batch]
Score = Callable[[dict[str, torch.Tensor]], torch.Tensor]


@dataclass
class QualityRule:
    """`data.domains.<name>.quality`: off while `keep` is None."""

    keep: float | None = None  # fraction of the scored windows kept (None: no selection)
    reference: str = "init"  # init (the run's starting model) | ckpt:<path> | hf:<id or folder>
    prefer: str = "low"  # low | high reference loss
    pool_tokens: int | None = None  # score a seeded subset of this many tokens (None: all)

    def __post_init__(self) -> None:
        if self.keep is not None and not 0.0 < self.keep <= 1.0:
            raise ValueError(f"keep: expected a fraction in (0, 1], got {self.keep}")
        if self.prefer not in ("low", "high"):
            raise ValueError(f"prefer: expected low or high, got {self.prefer!r}")
        if self.reference != "init" and not self.reference.startswith(("ckpt:", "hf:")):
            raise ValueError(
                f"reference: {self.reference!r} not understood; expected init, ckpt:<path> or "
                "hf:<id>"
            )
        if self.pool_tokens is not None and self.pool_tokens < 1:
            raise ValueError(f"pool_tokens: expected a positive count, got {self.pool_tokens}")

    @property
    def enabled(self) -> bool:
        return self.keep is not None


def reference_key(reference: str, init: str, preset: str | None = None) -> str:
    """What identifies the reference's weights: a checkpoint's path, size and time, a hub id, or
    for `init=scratch` the preset (its weights then follow from the run's seed, also in the key)."""
    spec = init if reference == "init" else reference
    if spec == "scratch":
        return f"scratch:{preset}"
    if spec.startswith("ckpt:"):
        path = Path(spec.removeprefix("ckpt:")).expanduser().resolve()
        stat = path.stat()
        return f"{path}:{stat.st_size}:{stat.st_mtime_ns}"
    return spec


def window_scores(
    score: Score, windows: TokenWindows, indices: np.ndarray, batch_size: int = 32
) -> np.ndarray:
    """`score` of each window in `indices`, in batches, with a progress bar."""
    losses = np.empty(len(indices), dtype=np.float32)
    for start in tqdm(range(0, len(indices), batch_size), desc="scoring windows", unit="batch"):
        items = [windows[int(i)] for i in indices[start : start + batch_size]]
        batch = {key: torch.stack([item[key] for item in items]) for key in items[0]}
        losses[start : start + len(items)] = score(batch).float().cpu().numpy()
    return losses


def select_windows(
    score: Score,
    windows: TokenWindows,
    rule: QualityRule,
    *,
    seed: int,
    name: str,
    cache_dir: Path,
    key: str,
) -> np.ndarray:
    """Sorted indices of the kept windows; scores are cached in `cache_dir` under `key`."""
    pool = np.arange(len(windows))
    if rule.pool_tokens is not None:
        pool = cap_windows(len(windows), max(1, rule.pool_tokens // windows.seq_len), seed, name)
    digest = hashlib.sha256(
        json.dumps(
            [
                key,
                seed,
                windows.seq_len,
                windows.document_aware,  # positions restart per document: other scores
                len(windows),
                pool.tolist()[:64],
                len(pool),
            ]
        ).encode()
    ).hexdigest()[:16]
    cache = cache_dir / f"quality-{name}-{digest}.npy"
    if cache.is_file():
        losses = np.load(cache)
    else:
        losses = window_scores(score, windows, pool)
        # atomic: another rank or job never reads half a file
        with written_atomically(cache) as tmp, tmp.open("wb") as handle:
            np.save(handle, losses)
    order = np.argsort(losses if rule.prefer == "low" else -losses, kind="stable")
    kept = max(1, round((rule.keep or 1.0) * len(pool)))
    return np.sort(pool[order[:kept]])
