"""Batches of a split held in one device's memory, drawn there each epoch.

A split resident on the training device (:func:`resomap.data.cache.resident`) is served by
:class:`DeviceBatches` instead of a DataLoader: its order is drawn on the device, so no index
crosses from the host and nothing waits for the device.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from resomap.data.cache import CachedSplit


class DeviceBatches:
    """Batches of a split held in one device's memory, indexed there: the order is a
    ``randperm`` drawn on the device each epoch, so no index crosses from the host and nothing
    waits for the device (a DataLoader would copy every batch's indices from the CPU).

    With ``world_size`` > 1 each rank takes every ``world_size``-th index of the same
    permutation, padded by wrapping round to equal length (as ``DistributedSampler``), so all
    ranks run the same number of steps. Unshuffled single-process batches are plain slices.
    """

    def __init__(self, split: CachedSplit, batch_size: int, shuffle: bool, seed: int = 0,
                 rank: int = 0, world_size: int = 1) -> None:
        self.split, self.batch_size, self.shuffle = split, int(batch_size), shuffle
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        self.epoch = 0

    def _per_rank(self) -> int:
        return -(-len(self.split) // self.world_size)

    def __len__(self) -> int:
        return -(-self._per_rank() // self.batch_size)

    def _order(self) -> torch.Tensor | None:
        n, device = len(self.split), self.split.device
        if self.shuffle:
            generator = torch.Generator(device=device).manual_seed(self.seed + self.epoch)
            order = torch.randperm(n, generator=generator, device=device)
        elif self.world_size == 1:
            return None
        else:
            order = torch.arange(n, device=device)
        if self.world_size > 1:
            total = self._per_rank() * self.world_size
            order = torch.cat([order, order[: total - n]])[self.rank::self.world_size]
        return order

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self._order()
        self.epoch += 1
        images, labels = self.split.images, self.split.labels
        count = len(self.split) if order is None else len(order)
        for start in range(0, count, self.batch_size):
            if order is None:
                yield images[start:start + self.batch_size], labels[start:start + self.batch_size]
            else:
                index = order[start:start + self.batch_size]
                yield images[index], labels[index]
