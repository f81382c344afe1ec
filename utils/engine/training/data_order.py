"""Deterministic, resumable training data order.

The order of epoch ``e`` is a permutation drawn from ``seed + e`` alone, so it is the same in every run, on
any number of processes: micro-step ``s`` of the epoch uses the permutation's slice
``[s * global_batch, (s + 1) * global_batch)``, which rank ``r`` reads as its positions ``r, r + world, ...``.
Resuming in the middle of an epoch therefore only has to skip the micro-batches already consumed.

The random choices a dataset makes per item (e.g. which frame of each segment to take) are made reproducible
by ``SeededItems``: the sampler yields ``(epoch, index)`` keys and every item is produced under RNG states
seeded from ``(seed, epoch, index)``, independent of DataLoader workers, batch position and resumption.
"""
from __future__ import annotations

import random
from typing import Iterator, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


class ResumableEpochSampler(Sampler):
    """Yields ``(epoch, dataset_index)`` keys for one rank.

    The epoch's permutation is cut to a whole number of global batches (``batch_size * world_size``; the
    remainder is dropped, like ``drop_last``), then dealt out round-robin so that each global batch is a
    contiguous slice of the permutation. ``set_epoch(e, start_batch=k)`` skips the first ``k`` batches.

    ``group_size`` G > 1 permutes groups of G consecutive items (items ``gG .. gG + G - 1``) instead of single
    items, keeping each group's order, so a group always lands in one global batch (G must divide it): hard
    negatives, e.g. a clip and its reversed twin. Items after the last whole group are never used.
    """

    def __init__(self, num_items: int, batch_size: int, rank: int = 0, world_size: int = 1,
                 seed: int = 0, shuffle: bool = True, group_size: int = 1):
        self.num_items, self.batch_size = num_items, batch_size
        self.rank, self.world_size = rank, world_size
        self.seed, self.shuffle, self.group_size = seed, shuffle, group_size
        self.epoch, self.start_batch = 0, 0
        if group_size < 1 or (batch_size * world_size) % group_size:
            raise ValueError(f"--train_group_size {group_size} must be >= 1 and divide the global batch "
                             f"({batch_size} x {world_size} processes)")
        if self.batches_per_epoch == 0:
            raise ValueError(f"{num_items} training items are fewer than one global batch "
                             f"({batch_size} x {world_size} processes); lower --batch_size")

    @property
    def batches_per_epoch(self) -> int:
        """Per-rank batches (= global micro-batches) per epoch."""
        return self.num_items // self.group_size * self.group_size // (self.batch_size * self.world_size)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """The full permutation of epoch ``epoch`` (identical on every rank)."""
        if not self.shuffle:
            return torch.arange(self.num_items)
        generator = torch.Generator().manual_seed(self.seed + epoch)
        if self.group_size == 1:
            return torch.randperm(self.num_items, generator=generator)
        groups = torch.randperm(self.num_items // self.group_size, generator=generator)
        return (groups[:, None] * self.group_size + torch.arange(self.group_size)).flatten()

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        used = self.batches_per_epoch * self.batch_size * self.world_size
        mine = self.epoch_order(self.epoch)[:used][self.rank::self.world_size]
        for index in mine[self.start_batch * self.batch_size:].tolist():
            yield self.epoch, index

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.start_batch) * self.batch_size


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A 64-bit seed mixed from (seed, epoch, index) by NumPy's SeedSequence (all three must be >= 0)."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1, np.uint64)[0])


class SeededItems(Dataset):
    """Wraps a dataset indexed by ``(epoch, index)`` keys: ``dataset[index]`` runs with Python's, NumPy's and
    torch's global RNGs seeded from ``(seed, epoch, index)``; the caller's RNG states are restored afterwards,
    so the model's own randomness (dropout) is untouched."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Tuple[int, int]):
        epoch, index = key
        s = item_seed(self.seed, epoch, index)
        py_state, np_state = random.getstate(), np.random.get_state()
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(s)
                random.seed(s)
                np.random.seed(s % (1 << 32))
                return self.dataset[index]
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
