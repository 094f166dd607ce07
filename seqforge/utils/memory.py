"""Measure the activation memory that autograd keeps for a backward pass."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor


class SavedTensorMeter:
    """Counts the bytes of tensors autograd saves for backward while active (``meter.bytes``).

    A tensor saved several times (a weight used at every step) is counted once; a view counts its own
    elements, not the whole storage it looks into (a window of a long input counts as the window).
    """

    def __init__(self) -> None:
        self.bytes = 0
        self._seen: set[tuple[int, tuple[int, ...], tuple[int, ...]]] = set()

    @contextmanager
    def track(self) -> Iterator[SavedTensorMeter]:
        def pack(t: Tensor) -> Tensor:
            key = (t.data_ptr(), tuple(t.shape), tuple(t.stride()))
            if key not in self._seen:
                self._seen.add(key)
                self.bytes += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            yield self
