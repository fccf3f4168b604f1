"""The replay mixture: exact per-batch counts, determinism, resume, ranks, caps, seen windows."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cpt.data.mixture import (
    Mixture,
    MixtureSource,
    cap_windows,
    largest_remainder,
    part_windows,
)


def mixture(weights=(0.95, 0.05), sizes=(1000, 300), batch=8, seed=0, allowed=None):
    allowed = allowed or [None] * len(weights)
    sources = [
        MixtureSource(f"s{i}", w, n, a) for i, (w, n, a) in enumerate(zip(weights, sizes, allowed))
    ]
    return Mixture(sources, batch, seed)


@pytest.mark.parametrize(
    ("weights", "batch"),
    [
        ((0.95, 0.05), 8),
        ((0.75, 0.25), 8),
        ((0.5, 0.3, 0.2), 7),
        ((0.99, 0.01), 16),
        ((1.0, 0.0), 8),
    ],
)
def test_every_batch_is_full_and_drift_stays_below_one_window(weights, batch):
    m = mixture(weights, sizes=(500,) * len(weights), batch=batch)
    target = np.array(weights) / sum(weights) * batch
    for step in range(1001):
        consumed = m.consumed(step)
        assert consumed.sum() == batch * step
        assert np.abs(consumed - target * step).max() < 1.0
    assert all(m.counts(s).min() >= 0 for s in range(100))


@settings(max_examples=50, deadline=None)
@given(
    weights=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=5).filter(lambda w: sum(w) > 0.01),
    batch=st.integers(1, 64),
    schedule=st.booleans(),
)
@example(
    weights=[1.0, 1.0, 1.0, 0.0625, 0.0625], batch=1, schedule=False
)  # 1.04 by largest remainder
def test_every_prefix_of_the_stream_matches_the_weights(weights, batch, schedule):
    """Over any weights, batch size and a weight schedule: every step's batch is full and each
    source's running count stays within one window of the running target."""
    m = mixture(tuple(weights), sizes=(100,) * len(weights), batch=batch)
    base = np.array(weights) / sum(weights)
    if schedule:  # a replay-like schedule: the first source's share moves over the steps

        def weights_at(step: int) -> np.ndarray:
            w = base.copy()
            w[0] = base[0] * (1 + np.sin(step / 7)) / 2 + 1e-3
            return w / w.sum()

        m.set_weight_schedule(weights_at)
    target = np.zeros(len(weights))
    for step in range(200):
        consumed = m.consumed(step)
        assert consumed.sum() == batch * step
        assert np.abs(consumed - target).max() < 1.0 + 1e-9
        assert m.counts(step).min() >= 0
        target = target + m.weights_at(step) * batch


def test_five_percent_replay_with_batch_eight():
    m = mixture((0.95, 0.05), batch=8)
    counts = np.array([m.counts(s) for s in range(1000)])
    assert set(counts[:, 1]) == {0, 1}  # 0.4 windows per batch: never more than one
    assert counts[:, 1].sum() == 400 and counts[:, 0].sum() == 7600
    for step in range(len(counts)):
        assert abs(counts[:step, 1].sum() - 0.4 * step) < 1


def test_same_seed_same_batches_other_seed_other_batches():
    a = [mixture(seed=1).global_batch_at(s) for s in range(20)]
    b = [mixture(seed=1).global_batch_at(s) for s in range(20)]
    c = [mixture(seed=2).global_batch_at(s) for s in range(20)]
    assert a == b and a != c


@pytest.mark.parametrize("resume_at", [1, 17, 250])
def test_resume_at_any_step_continues_identically(resume_at):
    straight = list(itertools.islice(mixture().micro_batches(0, 4, 0, 1, 2), 2 * resume_at + 40))
    resumed = list(itertools.islice(mixture().micro_batches(resume_at, 4, 0, 1, 2), 40))
    assert resumed == straight[2 * resume_at :]


def test_ranks_are_disjoint_and_cover_the_global_batch():
    world, accumulate, micro = 4, 2, 3
    m = mixture(batch=world * accumulate * micro)
    streams = [m.micro_batches(0, micro, rank, world, accumulate) for rank in range(world)]
    for step in range(30):
        taken = []
        for _ in range(accumulate):
            for stream in streams:
                taken += next(stream)
        expected = m.global_batch_at(step)
        assert sorted(taken) == sorted(expected) and len(taken) == len(expected)
    with pytest.raises(ValueError, match="global batch"):
        next(m.micro_batches(0, micro, 0, world + 1, accumulate))


def test_capped_source_repeats_its_subset_each_epoch_in_a_new_order():
    allowed = cap_windows(1000, 50, seed=3, name="s1")
    assert len(allowed) == 50 and np.array_equal(allowed, cap_windows(1000, 50, seed=3, name="s1"))
    m = mixture((0.5, 0.5), sizes=(1000, 1000), allowed=[None, allowed])
    draws = [m.window(1, d) for d in range(150)]
    epochs = [draws[i : i + 50] for i in (0, 50, 100)]
    for epoch in epochs:
        assert sorted(epoch) == sorted(allowed.tolist())  # every window once per epoch
    assert epochs[0] != epochs[1]  # in a new order


def test_uncapped_source_sees_every_window_once_per_epoch():
    m = mixture((1.0,), sizes=(37,))
    assert sorted(m.window(0, d) for d in range(37)) == list(range(37))


def test_seen_windows_are_those_drawn():
    m = mixture((0.7, 0.3), sizes=(400, 400), batch=8)
    drawn = {w for step in range(25) for s, w in m.global_batch_at(step) if s == 1}
    assert set(m.seen_windows(1, 25).tolist()) == drawn


@pytest.mark.parametrize("weights", [(-0.1, 1.1), (0.0, 0.0)])
def test_bad_weights_are_rejected(weights):
    with pytest.raises(ValueError, match="weights must be >= 0 and not all zero"):
        mixture(weights)


def test_largest_remainder_handles_negative_quotas():
    counts = largest_remainder(np.array([8.6, -0.6]), 8)
    assert counts.tolist() == [8, 0]


@given(st.integers(0, 3000), st.integers(2, 7), st.text(min_size=1, max_size=12))
def test_parts_split_the_windows_into_disjoint_even_iid_parts(windows, parts, dataset):
    split = [part_windows(windows, k, parts, dataset) for k in range(parts)]
    joined = np.concatenate(split)
    assert sorted(joined.tolist()) == list(range(windows))  # disjoint and covering
    assert max(map(len, split)) - min(map(len, split)) <= 1
    assert all(
        np.array_equal(a, part_windows(windows, k, parts, dataset)) for k, a in enumerate(split)
    )
    if windows >= 200:  # a seeded shuffle, not contiguous blocks: each part spans the corpus
        assert all(a[-1] - a[0] > windows // 2 for a in split)
