"""Batch samplers for metric learning.

:class:`PKSampler`: class-balanced P×K batches (P identities, K samples each), the sampling of
Hermans, Beyer & Leibe 2017 ("In Defense of the Triplet Loss for Person Re-Identification"),
so that pair losses (circle, triplet) always see positive pairs — a weighted sampler
as in OG-Net's public code rarely puts two images of one identity in a batch.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

__all__ = ["PKSampler"]


class PKSampler(torch.utils.data.Sampler):
    """Class-balanced P×K batches, split across workers.

    Each epoch shuffles identities; every identity contributes K indices (with replacement when it
    has fewer than K images). Rank r takes every world-th batch, so workers see disjoint batches.
    Use with ``DataLoader(dataset, batch_size=batch_size, sampler=..., drop_last=True)`` and call
    :meth:`set_epoch` before each epoch.

    Args:
        labels: (N,) class of every sample.
        batch_size: P·K, a multiple of ``instances``.
        instances: K, samples per identity in a batch.
        seed: with the epoch, seeds the order (the same on every rank).
        rank, world: this worker and the number of workers.

    Raises:
        ValueError: fewer identities than P = batch_size // instances.
    """

    def __init__(self, labels: np.ndarray, batch_size: int, instances: int, seed: int = 0,
                 rank: int = 0, world: int = 1) -> None:
        self.labels = np.asarray(labels)
        self.k = instances
        self.p = batch_size // instances
        self.seed, self.rank, self.world = seed, rank, world
        self.epoch = 0
        self.by_class = [np.nonzero(self.labels == c)[0] for c in np.unique(self.labels)]
        if len(self.by_class) < self.p:
            raise ValueError(f"optim.batch_size/optim.instances = {self.p} identities per batch, "
                             f"but the training set has only {len(self.by_class)}")
        n_batches = len(self.labels) // batch_size
        self.batches_per_rank = max(1, n_batches // world)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, self.epoch])
        need = self.batches_per_rank * self.world
        out: list[np.ndarray] = []
        while len(out) < need:
            order = rng.permutation(len(self.by_class))
            for s in range(0, len(order) - self.p + 1, self.p):
                batch = []
                for c in order[s:s + self.p]:
                    idx = self.by_class[c]
                    batch.append(rng.choice(idx, self.k, replace=len(idx) < self.k))
                out.append(np.concatenate(batch))
                if len(out) == need:
                    break
        return out[self.rank::self.world]

    def __iter__(self) -> Iterator[int]:
        for b in self._batches():
            yield from b.tolist()

    def __len__(self) -> int:
        return self.batches_per_rank * self.p * self.k
