"""Data order that survives a resume: shuffling from ``(seed, epoch)`` only (plain or length-bucketed), a
loader that continues an epoch where a checkpoint left it, and an evaluation sampler that gives every sample
to exactly one process."""

from __future__ import annotations

from collections.abc import Iterator, Sequence, Sized
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler


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


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of samples of similar length, drawn from ``seed + epoch`` only, to cut padding.

    Each epoch: a random permutation of all samples is cut into pools of ``batch_size * pool_batches``
    samples; each pool is sorted by length (stable) and cut into batches of ``batch_size`` (the last batch
    of a pool may be smaller), and the order of all batches is shuffled again. Every sample appears in
    exactly one batch per epoch. Like :class:`EpochShuffleSampler`, epoch ``k`` always gives the same
    batches (Lightning calls :meth:`set_epoch`), so :class:`ResumableDataLoader` resumes it exactly.
    Pass it as ``batch_sampler=``; it does not shard across DDP processes.

    Args:
        lengths: the length of each sample.
        batch_size: samples per batch.
        seed: base of every epoch's random draws.
        pool_batches: batches per sorted pool (1: no bucketing; larger: less padding, less randomness).
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0, pool_batches: int = 50) -> None:
        for name, value in (("batch_size", batch_size), ("pool_batches", pool_batches)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"BucketBatchSampler: {name} must be a positive int, got {value!r}")
        if len(lengths) == 0:
            raise ValueError("BucketBatchSampler: lengths is empty; expected one length per sample")
        self.lengths = torch.as_tensor(list(lengths), dtype=torch.long)
        self.batch_size, self.pool_batches = batch_size, pool_batches
        # the per-epoch permutation; Lightning calls set_epoch on `batch_sampler.sampler`
        self.sampler = EpochShuffleSampler(range(len(self.lengths)), seed=seed)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        full, rest = divmod(len(self.lengths), self.batch_size * self.pool_batches)
        return full * self.pool_batches + -(-rest // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.tensor(list(self.sampler), dtype=torch.long)
        pool = self.batch_size * self.pool_batches
        batches: list[list[int]] = []
        for start in range(0, len(order), pool):
            members = order[start : start + pool]
            members = members[torch.argsort(self.lengths[members], stable=True)]
            batches.extend(members[i : i + self.batch_size].tolist() for i in range(0, len(members), self.batch_size))
        generator = torch.Generator().manual_seed(self.sampler.seed + self.sampler.epoch + 2**31)
        return iter([batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()])


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` whose position in the current pass is saved in checkpoints.

    Lightning stores :meth:`state_dict` with the fit loop in every checkpoint and, when a run resumes in
    the middle of an epoch, calls :meth:`load_state_dict` before iterating again: the next pass then
    starts after the ``position`` batches already trained on. The skipped batches are still drawn from the
    sampler (and collated), so the order is the one of an uninterrupted epoch for any sampler, Lightning's
    ``DistributedSampler`` included. Same constructor as ``DataLoader`` (Lightning re-creates it under DDP).
    """

    position: int = 0  # batches handed out in the current pass
    _skip: int = 0  # batches to pass over at the start of the next pass (set by load_state_dict)

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]  # a generator over DataLoader's iterator
        skip, self._skip = self._skip, 0  # taken now, not at the first batch: an epoch may fetch none
        self.position = 0
        return self._batches(super().__iter__(), skip)

    def _batches(self, iterator: Iterator[Any], skip: int) -> Iterator[Any]:
        for _ in range(skip):
            if next(iterator, None) is None:
                return
            self.position += 1
        for batch in iterator:
            self.position += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"position": self.position}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        position = state_dict.get("position")
        if isinstance(position, bool) or not isinstance(position, int) or position < 0:
            raise ValueError(f"ResumableDataLoader: state 'position' must be an int >= 0, got {position!r}")
        self._skip = position


class UnpaddedDistributedSampler(DistributedSampler):
    """Evaluation under DDP without duplicates: process ``r`` of ``n`` gets samples ``r, r + n, r + 2n, ...``.

    torch's ``DistributedSampler`` pads every process to the same count by repeating samples, which
    counts those samples twice in test metrics (372 for 370 on 3 processes). Here the processes may get
    one sample (and possibly one batch) fewer than others; metrics that sync their states (torchmetrics)
    then see every sample exactly once. In order, never shuffled.
    """

    def __init__(self, dataset: Sized, num_replicas: int | None = None, rank: int | None = None) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)  # type: ignore[arg-type]
        self.num_samples = len(range(self.rank, len(dataset), self.num_replicas))
        self.total_size = len(dataset)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.total_size, self.num_replicas))

    def __len__(self) -> int:
        return self.num_samples


