"""Exact, resumable data mixtures (replay): which windows of which source form every global batch.

Per optimizer step, a global batch of `G = micro_batch x world_size x accumulate` windows holds
`counts[i]` windows of source i. Every source's running count stays strictly within one window of
its running target `sum of weight_i(step) * G`, whatever the weights and their schedule (0.05/0.95
with G = 8 gives 0 or 1 replay windows per step, 2 in every 5 steps on average). The rule is
earliest-deadline-first: the k-th window of source i may enter a batch once the target passes k - 1
and must enter before the target reaches k; each step takes the G released windows with the
earliest deadlines. Such an order exists for any weights (Tijdeman 1980, the chairman assignment
problem) and EDF finds one whenever one exists; a largest-remainder rule on each step's quota
does not (weights 1, 1, 1, 1/16, 1/16 with G = 1 drift 1.04 windows).

Within a source, windows are drawn in a seeded permutation per epoch (a source smaller than its
share is repeated, each epoch in a new order); a source may be capped to a fixed, seeded subset
of its windows (a sub-corpus trained for several epochs) or restricted to an explicit list (the
windows an earlier run saw). Positions inside the global batch are shuffled by `(seed, step)`;
micro-batch `a * world_size + rank` goes to that rank at accumulation slot `a`, so ranks take
disjoint slices that cover the global batch. Everything is a function of `(seed, step)`: the
state to resume is the step.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MixtureSource:
    name: str
    weight: float
    num_windows: int  # windows available in the source's training split
    allowed: np.ndarray | None = None  # restrict draws to these window ids (cap or seen-by)


HORIZON = 1 << 14  # steps ahead a deadline is looked for; a later one counts as none
EPS = 1e-6  # slack on cumulative float targets


def largest_remainder(quotas: np.ndarray, total: int) -> np.ndarray:
    """Non-negative integers summing to `total`, each within one of its quota."""
    counts = np.maximum(np.floor(quotas), 0).astype(np.int64)
    while counts.sum() > total:  # only when some quotas were negative
        ahead = np.where(counts > 0, counts - quotas, -np.inf)
        counts[int(np.argmax(ahead))] -= 1
    order = np.argsort(-(quotas - counts), kind="stable")
    for i in order[: total - int(counts.sum())]:
        counts[i] += 1
    return counts


def cap_windows(num_windows: int, max_windows: int, seed: int, name: str) -> np.ndarray:
    """A fixed, seeded subset of `max_windows` windows: the same sub-corpus in every run."""
    rng = np.random.default_rng([seed, _key(name), 0xCA9])
    return np.sort(rng.choice(num_windows, size=min(max_windows, num_windows), replace=False))


def part_windows(num_windows: int, part: int, parts: int, dataset: str) -> np.ndarray:
    """The windows of the `part`-th of `parts` IID parts of a prepared dataset: one fixed seeded
    split of its windows, whatever the run's seed, so that runs on parts 0 and 1 train on disjoint
    halves of the same data (a task sequence cut from one corpus)."""
    order = np.random.default_rng([_key(dataset), parts, 0x1D]).permutation(num_windows)
    return np.sort(order[part::parts])


def _key(name: str) -> int:
    return zlib.crc32(name.encode())


class Mixture:
    def __init__(self, sources: list[MixtureSource], global_batch: int, seed: int) -> None:
        weights = np.array([s.weight for s in sources], dtype=np.float64)
        if (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(
                f"mixture weights must be >= 0 and not all zero, got {weights.tolist()}"
            )
        for s in sources:
            empty = s.num_windows == 0 or (s.allowed is not None and len(s.allowed) == 0)
            if empty and s.weight > 0:
                raise ValueError(f"mixture source {s.name!r} has no training windows")
        self.sources = sources
        self.weights = weights / weights.sum()
        self.global_batch = global_batch
        self.seed = seed
        self._reset()
        self._perm_cache: dict[tuple[int, int], np.ndarray] = {}
        self._weights_at: Callable[[int], np.ndarray] | None = None

    def set_weight_schedule(self, weights_at: Callable[[int], np.ndarray] | None) -> None:
        """Weights as a function of the step (e.g. a decaying replay fraction); None: constant.

        The function must depend on the step alone, so that every count stays reproducible.
        """
        self._weights_at = weights_at
        self._reset()

    def weights_at(self, step: int) -> np.ndarray:
        if self._weights_at is None:
            return self.weights
        weights = np.asarray(self._weights_at(step), dtype=np.float64)
        return weights / weights.sum()

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.sources]

    def counts(self, step: int) -> np.ndarray:
        """Windows of each source in the global batch of `step`."""
        return self.consumed(step + 1) - self.consumed(step)

    def consumed(self, step: int) -> np.ndarray:
        """Windows of each source in all global batches before `step`.

        Cumulative counts are kept for every step computed so far, so the loader (running ahead)
        and the loggers (a step behind) read them in O(1) instead of replaying from step 0.
        """
        while self._known <= step:
            s = self._known - 1  # the step whose global batch is apportioned now
            if self._known == len(self._history):
                self._history = np.concatenate([self._history, np.zeros_like(self._history)])
            done = self._history[s]
            self._history[s + 1] = done + self._apportion(s, done)
            self._known += 1
        return self._history[step].copy()

    def _apportion(self, s: int, done: np.ndarray) -> np.ndarray:
        """Counts of step `s`: the G released windows with the earliest deadlines."""
        after = self._targets(s + 1, s + 2)[0]
        released = np.clip(np.ceil(after - EPS).astype(np.int64) - done, 0, self.global_batch)
        source = np.repeat(np.arange(len(self.sources)), released)
        deadline = np.concatenate(
            [self._deadlines(s, i, done[i] + np.arange(1, r + 1)) for i, r in enumerate(released)]
        )
        # lexsort is stable: within a source the earlier windows come first
        chosen = source[np.lexsort((source, deadline))[: self.global_batch]]
        counts = np.bincount(chosen, minlength=len(self.sources)).astype(np.int64)
        short = self.global_batch - int(counts.sum())
        if short:  # float rounding released too few: top up by what is still owed
            counts += largest_remainder(after - done - counts, short)
        return counts

    def _deadlines(self, s: int, source: int, draws: np.ndarray) -> np.ndarray:
        """The first step boundary at which the target reaches each draw (by then it is due)."""
        if self._weights_at is None:
            rate = self.weights[source] * self.global_batch
            return np.ceil((draws - EPS) / rate) if rate > 0 else np.full(len(draws), np.inf)
        ahead = self._targets(s + 1, s + 1 + HORIZON)[:, source]
        return s + 1 + np.searchsorted(ahead, draws - EPS, side="left").astype(np.float64)

    def _targets(self, start: int, stop: int) -> np.ndarray:
        """Row j: the running target before step start + j (the sum of every earlier step's quota)."""
        if self._weights_at is None:
            return np.arange(start, stop)[:, None] * (self.weights * self.global_batch)[None, :]
        while len(self._cumulative) < stop:
            b = len(self._cumulative)
            grown = np.empty((max(b, 1024), len(self.sources)))
            grown[0] = self._cumulative[-1] + self.weights_at(b - 1) * self.global_batch
            for j in range(1, len(grown)):
                grown[j] = grown[j - 1] + self.weights_at(b - 1 + j) * self.global_batch
            self._cumulative = np.concatenate([self._cumulative, grown])
        return self._cumulative[start:stop]

    def _reset(self) -> None:
        self._history = np.zeros((1024, len(self.sources)), dtype=np.int64)  # row s: before step s
        self._known = 1
        self._cumulative = np.zeros((1, len(self.sources)))  # row b: target before step b

    def window(self, source: int, draw: int) -> int:
        """The window id of the `draw`-th window taken from `source` (epoch-wise permutations)."""
        spec = self.sources[source]
        pool = spec.num_windows if spec.allowed is None else len(spec.allowed)
        epoch, within = divmod(draw, pool)
        key = (source, epoch)
        if key not in self._perm_cache:
            if len(self._perm_cache) > 4 * len(self.sources):
                self._perm_cache.clear()
            rng = np.random.default_rng([self.seed, _key(spec.name), epoch])
            self._perm_cache[key] = rng.permutation(pool)
        index = int(self._perm_cache[key][within])
        return index if spec.allowed is None else int(spec.allowed[index])

    def global_batch_at(self, step: int) -> list[tuple[int, int]]:
        """(source, window) pairs of the global batch of `step`, in shuffled positions."""
        start = self.consumed(step)
        counts = self.consumed(step + 1) - start
        items = [
            (i, self.window(i, int(start[i]) + j))
            for i in range(len(self.sources))
            for j in range(counts[i])
        ]
        order = np.random.default_rng([self.seed, step, 0xBA7C]).permutation(len(items))
        return [items[k] for k in order]

    def micro_batches(
        self, start_step: int, micro_batch: int, rank: int, world_size: int, accumulate: int
    ):
        """This rank's micro-batches from `start_step` on, forever: lists of (source, window)."""
        if micro_batch * world_size * accumulate != self.global_batch:
            raise ValueError(
                f"global batch {self.global_batch} != micro_batch {micro_batch} x world_size "
                f"{world_size} x accumulate {accumulate}"
            )
        step = start_step
        while True:
            batch = self.global_batch_at(step)
            for slot in range(accumulate):
                m = slot * world_size + rank
                yield batch[m * micro_batch : (m + 1) * micro_batch]
            step += 1

    def seen_windows(self, source: int, step: int) -> np.ndarray:
        """Window ids of `source` used in the first `step` steps (for replay of seen data)."""
        return self.drawn_windows(source, int(self.consumed(step)[source]))

    def drawn_windows(self, source: int, count: int) -> np.ndarray:
        """Window ids of the first `count` draws from `source`, whatever weights led to them."""
        return np.unique([self.window(source, d) for d in range(count)]).astype(np.int64)
