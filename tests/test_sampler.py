"""Hard-negative batch composition and plain batch sampling: coverage, packing, ranks, determinism, resume."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from mmclip_plugin.sampler import GroupedBatchSampler, RandomBatchSampler


def _groups(sizes: list[int]) -> list[list[int]]:
    out, start = [], 0
    for size in sizes:
        out.append(list(range(start, start + size)))
        start += size
    return out


def _epoch(sampler_cls, *args, world_size: int, **kwargs) -> list[list[list[int]]]:
    """batches[rank][i] for one epoch."""
    return [list(sampler_cls(*args, rank=r, world_size=world_size, **kwargs)) for r in range(world_size)]


LAYOUTS = [
    # group sizes, batch size, world size
    ([5] * 20, 8, 1),
    ([5] * 20, 8, 2),
    ([1, 2, 3, 4, 5, 6] * 6, 6, 2),
    ([11] * 9, 4, 3),  # groups larger than a batch
    ([3, 12, 1, 1, 7, 2, 9, 4, 4, 4], 5, 2),
]


@pytest.mark.parametrize("sizes, batch_size, world", LAYOUTS)
@pytest.mark.parametrize("drop_last", [True, False])
def test_every_item_once_and_equal_batches(sizes, batch_size, world, drop_last):
    groups = _groups(sizes)
    n = sum(sizes)
    per_rank = _epoch(GroupedBatchSampler, groups, batch_size, seed=3, world_size=world, drop_last=drop_last)
    lengths = {len(b) for rank in per_rank for b in rank}
    assert lengths == {batch_size}, "every rank gets batch_size items in every batch"
    assert len({len(rank) for rank in per_rank}) == 1, "every rank gets the same number of batches"
    sampler = GroupedBatchSampler(groups, batch_size, seed=3, world_size=world, drop_last=drop_last)
    assert len(sampler) == len(per_rank[0])
    counts = Counter(i for rank in per_rank for b in rank for i in b)
    global_batch = batch_size * world
    if drop_last:
        assert len(sampler) == n // global_batch
        assert all(c == 1 for c in counts.values()) and len(counts) == len(sampler) * global_batch
    else:
        assert len(sampler) == -(-n // global_batch)
        assert set(counts) == set(range(n)), "drop_last=False covers every item"
        assert sum(counts.values()) - n < global_batch, "only the tail is padded with repeats"


@pytest.mark.parametrize("sizes, batch_size", [([5] * 30, 16), ([1, 2, 3, 4, 5, 6] * 8, 7), ([4, 4, 2, 6, 3, 1] * 10, 8)])
def test_groups_that_fit_stay_together(sizes, batch_size):
    """Each per-rank batch boundary splits at most one group; all other groups sit whole in one batch."""
    groups = _groups(sizes)
    world = 2
    sampler = GroupedBatchSampler(groups, batch_size, seed=11, world_size=world, drop_last=False)
    chunks = sampler.epoch_chunks(0)
    where = {item: c for c, chunk in enumerate(chunks) for item in chunk.tolist()}
    split = [g for g in groups if len({where[i] for i in g}) > 1]
    assert len(split) <= len(chunks) - 1
    assert len(split) < len(groups) / 2, "most groups must stay whole"
    for g in split:  # a split group continues in the next chunk
        spans = sorted({where[i] for i in g})
        assert spans == list(range(spans[0], spans[0] + len(spans)))
    # rank r receives chunk r of every global batch
    for r in range(world):
        got = list(GroupedBatchSampler(groups, batch_size, seed=11, rank=r, world_size=world, drop_last=False))
        assert got == [chunks[i * world + r].tolist() for i in range(len(got))]


def test_large_group_spreads_over_consecutive_batches():
    groups = _groups([2, 23, 2, 2])
    for seed in range(5):
        batches = list(GroupedBatchSampler(groups, 5, seed=seed, drop_last=True))
        big = set(groups[1])
        holding = [i for i, b in enumerate(batches) if big & set(b)]
        assert holding == list(range(holding[0], holding[0] + len(holding)))
        assert len(holding) <= -(-23 // 5) + 1  # 23 items in 5-item batches, sharing at most its two ends
        in_order = [i for b in batches for i in b if i in big]
        assert in_order == sorted(in_order)


def test_order_is_deterministic_per_seed_and_epoch():
    groups = _groups([3] * 40)

    def order(seed, epoch):
        s = GroupedBatchSampler(groups, 6, seed=seed)
        s.set_epoch(epoch)
        return list(s)

    assert order(1, 0) == order(1, 0)
    assert order(1, 0) != order(1, 1)
    assert order(1, 0) != order(2, 0)
    # the groups themselves are shuffled but each group's items keep their order
    flat = [i for b in order(1, 2) for i in b]
    for g in groups:
        positions = [flat.index(i) for i in g]
        assert positions == sorted(positions)


@pytest.mark.parametrize("sampler_args", [("grouped", [4, 1, 6, 2, 3] * 6, 5), ("random", [1] * 57, 4)])
@pytest.mark.parametrize("world", [1, 2])
def test_resume_mid_epoch_reproduces_the_uninterrupted_order(sampler_args, world):
    kind, sizes, batch_size = sampler_args

    def make(rank):
        if kind == "grouped":
            return GroupedBatchSampler(_groups(sizes), batch_size, seed=5, rank=rank, world_size=world)
        return RandomBatchSampler(sum(sizes), batch_size, seed=5, rank=rank, world_size=world)

    for rank in range(world):
        full = make(rank)
        full.set_epoch(1)
        expected = list(full)
        first = make(rank)
        first.set_epoch(1)
        it = iter(first)
        head = [next(it) for _ in range(3)]
        state = first.state_dict()
        assert state["start_batch"] == 3 and state["epoch"] == 1
        resumed = make(rank)
        resumed.load_state_dict(state)
        tail = list(resumed)
        assert head + tail == expected
        assert list(resumed) == expected, "the epoch after a resumed one starts from its first batch again"
        explicit = make(rank)
        explicit.set_epoch(1, start_batch=2)
        assert list(explicit) == expected[2:]


def test_state_dict_rejects_a_different_geometry():
    s = GroupedBatchSampler(_groups([2] * 10), 4, seed=0)
    with pytest.raises(ValueError, match="batch_size=4 but this sampler has 2"):
        GroupedBatchSampler(_groups([2] * 10), 2, seed=0).load_state_dict(s.state_dict())
    with pytest.raises(ValueError, match="start_batch=99"):
        s.set_epoch(0, start_batch=99)
    assert s.state_dict(batches_done=4)["start_batch"] == 4


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        (([[0, 1], [1, 2]], 2), {}, "item index 1 appears more than once"),
        (([[0, 1], []], 2), {}, "group 1 is empty"),
        (([[0, 1]], 0), {}, "batch_size must be >= 1"),
        (([[0, 1]], 1), {"rank": 2, "world_size": 2}, "rank=2"),
        (([[0, 1]], 4), {}, "no complete global batch"),
        (([], 4), {}, "groups is empty"),
    ],
)
def test_invalid_arguments(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        GroupedBatchSampler(*args, seed=0, **kwargs)


def test_random_sampler_is_a_shuffled_partition_and_plugs_into_a_dataloader():
    n, batch_size, world = 50, 4, 2
    per_rank = _epoch(RandomBatchSampler, n, batch_size, seed=9, world_size=world)
    items = [i for rank in per_rank for b in rank for i in b]
    assert len(items) == len(set(items)) == (n // (batch_size * world)) * batch_size * world
    assert items != sorted(items)
    loader = DataLoader(list(range(n)), batch_sampler=RandomBatchSampler(n, batch_size, seed=9))
    assert [b.tolist() for b in loader] == list(RandomBatchSampler(n, batch_size, seed=9))


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 12), min_size=1, max_size=30),
    batch_size=st.integers(1, 9),
    world=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_packing_properties(sizes, batch_size, world, seed):
    """For any group sizes: all chunks full, items preserved, ranks equal."""
    n = sum(sizes)
    sampler = GroupedBatchSampler(_groups(sizes), batch_size, seed=seed, world_size=world, drop_last=False)
    chunks = sampler.epoch_chunks(0)
    assert len(chunks) == len(sampler) * world
    assert all(len(c) == batch_size for c in chunks)
    flat = np.concatenate(chunks)
    assert set(flat.tolist()) == set(range(n))
    assert len(np.unique(flat[:n])) == n, "the first pass over the items has no repeats"
