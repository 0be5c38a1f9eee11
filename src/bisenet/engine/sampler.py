"""A data order that is a pure function of (seed, iteration): resuming needs no saved state."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler


class IterationSampler(Sampler):
    """Yields (epoch, index) keys for one process, from iteration `start_iter` on.

    The global stream is one fresh permutation of the dataset per epoch (seeded by
    (seed, epoch)); global batch g takes stream items [g*B*W, (g+1)*B*W) and rank r
    takes its B of them. Epoch boundaries fall inside batches, so no sample is dropped.
    """

    def __init__(self, dataset_len: int, batch_size: int, seed: int, rank: int = 0,
                 world_size: int = 1, start_iter: int = 0, max_iters: int | None = None) -> None:
        if dataset_len < 1:
            raise ValueError("the dataset is empty")
        self.n = dataset_len
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.start_iter = start_iter
        self.max_iters = max_iters

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.n)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        global_batch = self.batch_size * self.world_size
        iteration = self.start_iter
        cached_epoch, perm = -1, None
        while self.max_iters is None or iteration < self.max_iters:
            first = iteration * global_batch + self.rank * self.batch_size
            for pos in range(first, first + self.batch_size):
                epoch, offset = divmod(pos, self.n)
                if epoch != cached_epoch:
                    cached_epoch, perm = epoch, self._permutation(epoch)
                yield epoch, int(perm[offset])
            iteration += 1

    def __len__(self) -> int:
        if self.max_iters is None:
            raise TypeError("an endless sampler has no length")
        return (self.max_iters - self.start_iter) * self.batch_size
