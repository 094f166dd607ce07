"""Shuffling that depends only on ``(seed, epoch)``, so a run resumed from a checkpoint sees the same order."""

from __future__ import annotations

from collections.abc import Iterator, Sized

import torch
from torch.utils.data import Sampler


class EpochShuffleSampler(Sampler[int]):
    """A random permutation of ``range(len(data_source))`` drawn from ``seed + epoch``.

    Lightning calls :meth:`set_epoch` at the start of every training epoch (also when resuming), so epoch
    ``k`` always visits the samples in the same order, whether or not the run was interrupted before it.
    Under DDP Lightning swaps in its ``DistributedSampler``, which follows the same rule.
    """

    def __init__(self, data_source: Sized, seed: int = 0) -> None:
        self.data_source = data_source
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.data_source)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(len(self.data_source), generator=generator).tolist())
