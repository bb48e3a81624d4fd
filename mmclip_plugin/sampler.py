"""Batch samplers: hard-negative batch composition and the plain random case, both rank-aware and resumable.

A *group* is a list of data-set item indices that should meet in one batch: a positive pair and its
hard negatives used as pairs of their own (negative image with its own negative caption), so that
the in-batch loss itself compares near-duplicates (the paper's best ablation).

Packing, per epoch:

1. the groups are shuffled with a generator seeded from ``(seed, epoch)``; items keep their order
   inside a group;
2. groups are packed into per-rank batches ("chunks") of ``batch_size``: a group goes whole into the
   current chunk when it fits; otherwise a later group (within ``lookahead`` groups) that fits is taken
   first; when none fits the free slots are filled with the first items of the next group, whose
   remainder opens the next chunk (a group larger than a batch is spread over consecutive chunks the
   same way). Every chunk but the last is therefore full and ``len()`` does not depend on the epoch;
3. every ``world_size`` consecutive chunks form a global batch and rank ``r`` receives the ``r``-th, so a
   group that fits in a chunk stays on one rank;
4. ``drop_last=True`` drops the incomplete tail; ``drop_last=False`` completes it with items from the
   start of the epoch's order (duplicates, as ``DistributedSampler`` does), so every rank always gets
   ``batch_size`` items and cross-rank gathering sees equal shapes.

Resuming: ``set_epoch(epoch, start_batch=k)`` (or ``load_state_dict``) makes the next iteration skip the
first ``k`` batches of that epoch; the order is a pure function of (seed, epoch, groups, sizes).
"""
from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Sampler


class GroupedBatchSampler(Sampler[list[int]]):
    """Pack groups of item indices into per-rank batches (see the module docstring).

    Args:
        groups: item indices of each group; every index must appear once overall.
        batch_size: items per rank per batch.
        seed: shuffling seed; the epoch's order comes from ``numpy.random.default_rng([seed, epoch])``.
        rank: this process's rank.
        world_size: number of processes; a global batch holds ``batch_size * world_size`` items.
        drop_last: drop the incomplete last global batch instead of completing it with repeated items.
        lookahead: how many following groups are searched for one that fits a chunk's free slots
            before a group is split.
    """

    def __init__(
        self,
        groups: Sequence[Sequence[int]],
        batch_size: int,
        *,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
        lookahead: int = 64,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} must lie in [0, world_size={world_size})")
        if lookahead < 0:
            raise ValueError(f"lookahead must be >= 0, got {lookahead}")
        if isinstance(groups, np.ndarray) and groups.ndim == 2:  # equal-sized groups, e.g. RandomBatchSampler
            self.groups = list(groups.astype(np.int64, copy=False))
            self._flat = groups.astype(np.int64, copy=False).reshape(-1)
        else:
            self.groups = [np.asarray(g, dtype=np.int64).reshape(-1) for g in groups]
            self._flat = np.concatenate(self.groups) if self.groups else np.zeros(0, dtype=np.int64)
        _check_groups(self.groups, self._flat)
        self.num_items = int(self._flat.size)
        self._singletons = self.num_items == len(self.groups)
        self.batch_size = batch_size
        self.seed = int(seed)
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.lookahead = lookahead
        self.epoch = 0
        self.start_batch = 0
        self._position = 0  # batches of the current epoch handed out by the running iterator
        if len(self) == 0 and drop_last:
            raise ValueError(
                f"{self.num_items} items make no complete global batch of {batch_size} x {world_size} ranks; "
                "lower batch_size or set drop_last=False"
            )

    # ------------------------------------------------------------------------------------------- state
    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch whose order the next iteration yields, skipping its first ``start_batch`` batches."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        if not 0 <= start_batch <= len(self):
            raise ValueError(f"start_batch={start_batch} must lie in [0, {len(self)}] (batches per epoch)")
        self.epoch = int(epoch)
        self.start_batch = int(start_batch)
        self._position = self.start_batch

    def state_dict(self, batches_done: int | None = None) -> dict[str, Any]:
        """Where to resume.

        Args:
            batches_done: batches of the current epoch the trainer has consumed. None uses how many the
                iterator has handed out, which is only right when nothing prefetches ahead (a DataLoader
                with workers asks for batches early: pass the trainer's own count then).
        """
        done = self._position if batches_done is None else int(batches_done)
        return {
            "epoch": self.epoch,
            "start_batch": done,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "world_size": self.world_size,
            "num_items": self.num_items,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict`; raise if the data or batch geometry changed."""
        for key in ("seed", "batch_size", "world_size", "num_items"):
            if key in state and state[key] != getattr(self, key):
                raise ValueError(
                    f"sampler state was saved with {key}={state[key]!r} but this sampler has {getattr(self, key)!r}; "
                    "resuming would not reproduce the data order"
                )
        self.set_epoch(int(state["epoch"]), int(state.get("start_batch", 0)))

    # ------------------------------------------------------------------------------------------- order
    def __len__(self) -> int:
        """Batches per rank per epoch (a resumed epoch yields ``len - start_batch``)."""
        chunks = self.num_items // self.batch_size if self.drop_last else -(-self.num_items // self.batch_size)
        return chunks // self.world_size if self.drop_last else -(-chunks // self.world_size)

    def __iter__(self) -> Iterator[list[int]]:
        start, self.start_batch = self.start_batch, 0
        chunks = self.epoch_chunks(self.epoch)
        self._position = start
        for index in range(start, len(self)):
            batch = chunks[index * self.world_size + self.rank]
            self._position = index + 1
            yield batch.tolist()

    def epoch_chunks(self, epoch: int) -> list[np.ndarray]:
        """All per-rank batches of ``epoch`` in order (global batch ``g`` is chunks ``g*W .. g*W + W - 1``)."""
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.groups))
        if self._singletons:  # plain sampling: packing is just cutting the permutation
            flat = self._flat[order]
            chunks = [flat[i : i + self.batch_size] for i in range(0, len(flat), self.batch_size)]
        else:
            chunks = _pack([self.groups[i] for i in order], self.batch_size, self.lookahead)
        needed = len(self) * self.world_size
        if len(chunks) > needed:  # drop_last: the incomplete tail
            chunks = chunks[:needed]
        elif len(chunks) < needed or (chunks and len(chunks[-1]) < self.batch_size):
            chunks = _complete(chunks, needed, self.batch_size)
        return chunks


class RandomBatchSampler(GroupedBatchSampler):
    """Plain shuffled batches over ``num_items`` items (every group has one item), same interface and guarantees."""

    def __init__(
        self,
        num_items: int,
        batch_size: int,
        *,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
    ):
        if num_items < 1:
            raise ValueError(f"num_items must be >= 1, got {num_items}")
        super().__init__(
            np.arange(num_items).reshape(-1, 1), batch_size, seed=seed, rank=rank, world_size=world_size,
            drop_last=drop_last, lookahead=0,
        )


def _check_groups(groups: list[np.ndarray], flat: np.ndarray) -> None:
    if not groups:
        raise ValueError("groups is empty: nothing to sample")
    sizes = np.fromiter((g.size for g in groups), dtype=np.int64, count=len(groups))
    if (sizes == 0).any():
        raise ValueError(f"group {int(np.argmin(sizes))} is empty; every group needs at least one item index")
    if flat.min() < 0:
        owner = int(np.searchsorted(np.cumsum(sizes), int(np.argmin(flat)), side="right"))
        raise ValueError(f"group {owner} holds a negative item index {int(flat.min())}")
    values, counts = np.unique(flat, return_counts=True)
    if (counts > 1).any():
        dup = int(values[counts > 1][0])
        owners = [i for i, g in enumerate(groups) if dup in g][:5]
        raise ValueError(f"item index {dup} appears more than once (groups {owners}); each item must be in one group")


def _pack(groups: list[np.ndarray], batch_size: int, lookahead: int) -> list[np.ndarray]:
    """Pack groups (in order) into chunks of ``batch_size``; only the last chunk may be short."""
    pending: deque[np.ndarray] = deque(groups)
    chunks: list[np.ndarray] = []
    current: list[np.ndarray] = []
    free = batch_size
    while pending:
        group = pending[0]
        if len(group) <= free:
            current.append(pending.popleft())
            free -= len(group)
        else:
            fit = next((j for j in range(1, min(lookahead + 1, len(pending))) if len(pending[j]) <= free), None)
            if fit is not None and len(group) <= batch_size:
                current.append(pending[fit])
                del pending[fit]
                free -= len(current[-1])
            else:  # split: fill the free slots, the rest stays first in line
                current.append(group[:free])
                pending[0] = group[free:]
                free = 0
        if free == 0:
            chunks.append(np.concatenate(current))
            current, free = [], batch_size
    if current:
        chunks.append(np.concatenate(current))
    return chunks


def _complete(chunks: list[np.ndarray], needed: int, batch_size: int) -> list[np.ndarray]:
    """Fill the short last chunk and add chunks up to ``needed`` with items from the start of the order."""
    flat = np.concatenate(chunks)
    total = needed * batch_size
    reps = -(-total // len(flat))
    padded = np.concatenate([flat] + [flat] * reps)[:total]
    return [padded[i * batch_size : (i + 1) * batch_size] for i in range(needed)]
