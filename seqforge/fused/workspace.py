"""Reusable CPU buffers for the fused loops, so that large per-call buffers cost no page faults.

A fresh ``(T, B, 4H)`` buffer per call is slow on CPU: glibc hands large freed blocks back to the kernel, so
every call faults the same pages in again (``benchmarks/SPEED.md``). :class:`Workspace` keeps such buffers
and hands one out again only when nothing else uses its memory. Every call gets a new tensor over a kept
storage (``Tensor.set_``: a plain tensor, not a view), and a storage counts as free only while the
workspace's own tensor is its single user: autograd's saved tensors, gradients, views, a user's references
all hold the storage, so a buffer that a graph still needs for its backward, or that a caller kept, is never
handed to another call, whatever order the calls and their backwards run in.

Only CPU tensors are pooled (CUDA has its caching allocator); the contents of a handed-out buffer are
undefined, as with ``torch.empty``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import torch
from torch import Tensor

_use_count = getattr(torch._C, "_storage_Use_Count", None)  # strong references to a storage


class Workspace:
    """A pool of CPU buffers of at most ``max_bytes`` (in use and free together).

    :meth:`empty` returns an uninitialized tensor of the asked shape, dtype and device like ``torch.empty``,
    over a kept buffer of the same dtype whose memory is free and at most twice the size needed, else over a
    new one (the least recently used free buffers are dropped to stay within ``max_bytes``; beyond it the
    tensor is a plain allocation). Thread-safe.
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"Workspace: max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self._buffers: list[tuple[Tensor, int]] = []  # (1-D base, its storage's use count when idle), LRU first
        self._lock = threading.Lock()

    @property
    def cached_bytes(self) -> int:
        """Bytes held by the pool, free or in use."""
        return sum(_nbytes(b) for b, _ in self._buffers)

    def clear(self) -> None:
        """Forget every buffer (memory in use elsewhere stays valid; free memory is released)."""
        with self._lock:
            self._buffers.clear()

    def empty(self, shape: Sequence[int], like: Tensor) -> Tensor:
        """An uninitialized ``shape`` tensor with ``like``'s dtype and device (pooled on CPU)."""
        numel = 1
        for n in shape:
            numel *= n
        if like.device.type != "cpu" or numel == 0 or _use_count is None:
            return like.new_empty(list(shape))
        with self._lock:  # the new tensor holds the storage before another call can take it
            base = self._take(numel, like.dtype)
            if base is None:
                return like.new_empty(list(shape))
            if torch.is_inference_mode_enabled():
                with torch.inference_mode(False):  # a normal tensor: autograd may save it later
                    return _over(base, shape)
            return _over(base, shape)

    def _take(self, numel: int, dtype: torch.dtype) -> Tensor | None:
        for k, (base, idle) in enumerate(self._buffers):
            if base.dtype == dtype and numel <= base.numel() <= 2 * numel and _users(base) <= idle:
                self._buffers.append(self._buffers.pop(k))
                return base
        size = numel * torch.empty(0, dtype=dtype).element_size()
        held = self.cached_bytes
        for entry in [e for e in self._buffers if _users(e[0]) <= e[1]]:  # free ones, least recently used first
            if held + size <= self.max_bytes:
                break
            self._buffers.remove(entry)
            held -= _nbytes(entry[0])
        if held + size > self.max_bytes:
            return None
        with torch.inference_mode(False):
            base = torch.empty(numel, dtype=dtype)
        self._buffers.append((base, _users(base)))  # nothing else can hold it yet
        return base


def _over(base: Tensor, shape: Sequence[int]) -> Tensor:
    """A new contiguous ``shape`` tensor over ``base``'s storage (not a view of ``base``)."""
    strides = [1] * len(shape)
    for d in range(len(shape) - 2, -1, -1):
        strides[d] = strides[d + 1] * shape[d + 1]
    return torch.empty(0, dtype=base.dtype).set_(base.untyped_storage(), 0, list(shape), strides)


def _nbytes(base: Tensor) -> int:
    return base.numel() * base.element_size()


def _users(base: Tensor) -> int:
    """Strong references to ``base``'s storage: one per tensor over it (``base`` itself, views, autograd's
    saved tensors, gradients), plus the storage object asked for here."""
    assert _use_count is not None
    return int(_use_count(base.untyped_storage()._cdata))


WORKSPACE = Workspace(max_bytes=256 * 2**20)
"""The fused loops' pool (CPU); ``WORKSPACE.max_bytes = 0`` turns pooling off."""
