"""`trainer=fsdp`'s strategy options: the device mesh covers the world or is refused; a bad option
names its key."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cpt.scale.fsdp import FSDP2


@given(
    nodes=st.integers(1, 8),
    devices=st.integers(1, 8),
    shard_size=st.one_of(st.none(), st.just("node"), st.integers(1, 16)),
)
def test_the_mesh_covers_the_world_or_is_refused(nodes, devices, shard_size):
    strategy = FSDP2(shard_size=shard_size)
    world = nodes * devices
    shards = {None: world, "node": devices}.get(shard_size, shard_size)
    if world % shards:
        with pytest.raises(ValueError, match="does not divide the world size"):
            strategy.mesh_shape(world, devices)
    else:
        replicas, got = strategy.mesh_shape(world, devices)
        assert replicas * got == world and got == shards


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"shard_size": 0}, "shard_size: expected null (all ranks), node or a positive count"),
        ({"shard_size": "rack"}, "shard_size: expected null"),
        ({"param_dtype": "int8"}, "param_dtype: expected auto or one of ['bf16', 'fp16', 'fp32']"),
        ({"reduce_dtype": "auto"}, "reduce_dtype: expected one of ['bf16', 'fp16', 'fp32']"),
    ],
)
def test_bad_strategy_options_name_the_key(options, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        FSDP2(**options)
