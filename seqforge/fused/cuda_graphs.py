"""CUDA-graph capture of whole recurrence loops for fixed shapes.

A scripted loop launches a few kernels per step; on a GPU the launch overhead, not the arithmetic, dominates.
:class:`GraphCache` captures one call of a loop function into a ``torch.cuda.CUDAGraph`` and afterwards
replays it: the tensor arguments are copied into static input buffers, the graph is replayed and the static
outputs are cloned (the next replay overwrites them). Entries are keyed by the function and, per argument,
shape/dtype/device (or the value of non-tensor arguments), so a new shape gets a new graph; a key is only
captured the second time it is seen, so one-off shapes (the last short batch, dynamic lengths) run
uncaptured, and at most ``max_entries`` graphs are kept (least recently used evicted).

Capture is skipped, and the plain function runs, when the inputs are not on CUDA, while another capture is
in progress, inside ``torch.compile`` tracing, under autocast (autocast's weight cache must not be captured),
or after a capture of that key failed once.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import torch
from torch import Tensor

log = logging.getLogger(__name__)

WARMUP_CALLS = 3  # the profiling executor specializes a scripted function during its first calls
MAX_SEEN = 1024  # signatures remembered while waiting for their second call


def _signature(arg: Any) -> Hashable:
    if isinstance(arg, Tensor):
        return ("T", tuple(arg.shape), arg.dtype, str(arg.device))
    return ("V", arg)


class _Entry:
    def __init__(self, graph: torch.cuda.CUDAGraph, inputs: list[Any], outputs: list[Tensor]) -> None:
        self.graph = graph
        self.inputs = inputs
        self.outputs = outputs


class GraphCache:
    """Replays captured CUDA graphs of ``fn(*args) -> list[Tensor]`` for repeated argument signatures."""

    def __init__(self, max_entries: int = 8) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._seen: set[Hashable] = set()
        self._failed: set[Hashable] = set()

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def can_capture(args: Sequence[Any]) -> bool:
        """Whether the call may be captured at all (CUDA tensors, no capture/compile/autocast in progress)."""
        tensors = [a for a in args if isinstance(a, Tensor)]
        if not tensors or not all(t.is_cuda for t in tensors):
            return False
        if torch.compiler.is_compiling() or torch.cuda.is_current_stream_capturing():
            return False
        return not torch.is_autocast_enabled("cuda")

    def __call__(self, name: str, fn: Callable[..., list[Tensor]], args: Sequence[Any]) -> list[Tensor]:
        if not self.can_capture(args):
            return fn(*args)
        key = (name, *(_signature(a) for a in args))
        entry = self._entries.get(key)
        if entry is None:
            if key in self._failed or key not in self._seen:
                if len(self._seen) >= MAX_SEEN:  # many one-off shapes: forget them rather than grow
                    self._seen.clear()
                self._seen.add(key)
                return fn(*args)
            entry = self._capture(key, fn, args)
            if entry is None:
                return fn(*args)
        self._entries.move_to_end(key)
        for static, arg in zip(entry.inputs, args, strict=True):
            if isinstance(static, Tensor):
                static.copy_(arg)
        entry.graph.replay()
        return [out.clone() for out in entry.outputs]

    def _capture(self, key: tuple, fn: Callable[..., list[Tensor]], args: Sequence[Any]) -> _Entry | None:
        static = [a.detach().clone() if isinstance(a, Tensor) else a for a in args]
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(WARMUP_CALLS):
                    fn(*static)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                outputs = fn(*static)
        except RuntimeError as err:  # capture impossible here: remember and run uncaptured
            log.warning("CUDA-graph capture of %s failed (%s); running it uncaptured", key[0], err)
            self._failed.add(key)
            return None
        entry = _Entry(graph, static, outputs)
        self._entries[key] = entry
        if len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return entry
