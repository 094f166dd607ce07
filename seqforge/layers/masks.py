"""Length masks and reversal within lengths: the one implementation every layer, model and backend uses.

Written in the TorchScript subset (the scripted layer loop calls them too), except
:func:`check_length_range`, which only eager code calls.
"""

from __future__ import annotations

import torch
from torch import Tensor


def length_mask(lengths: Tensor, max_len: int) -> Tensor:
    """``(B, max_len)`` bool mask, ``True`` at positions ``t < lengths[b]``."""
    return torch.arange(max_len, device=lengths.device) < lengths.to(torch.long).unsqueeze(-1)


def time_mask(lengths: Tensor, steps: int) -> Tensor:
    """Time-major ``(steps, B)`` bool mask, ``True`` on the valid steps of each sequence."""
    return length_mask(lengths, steps).t()


def reverse_index(lengths: Tensor, steps: int) -> Tensor:
    """``(steps, B)`` gather index reversing each sequence within its length; padded steps stay in place."""
    t = torch.arange(steps, device=lengths.device).unsqueeze(1)  # (T, 1)
    return torch.where(t < lengths, lengths - 1 - t, t)


def reverse_time(x: Tensor, index: Tensor | None) -> Tensor:
    """Reverse time-major ``x (T, B, *)`` in time: within each length when ``index`` (:func:`reverse_index`) is
    given, else the whole axis. Applying it twice is the identity."""
    if index is None:
        return x.flip(0)
    shape = index.shape + (1,) * (x.dim() - 2)
    return x.gather(0, index.view(shape).expand(x.shape))


def select_valid(x: Tensor, valid: Tensor) -> Tensor:
    """``x (T, B, *)`` with every padded step (``valid (T, B)`` False) replaced by zero, by selection: NaN or
    Inf there never reach the result, in value or in gradient."""
    keep = valid.view(valid.shape + (1,) * (x.dim() - 2))
    return torch.where(keep, x, torch.zeros_like(x))


def reverse_padded(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Reverse each sequence of a time-major ``(T, B, *)`` batch within its own length (all of it if None)."""
    return reverse_time(x, None if lengths is None else reverse_index(lengths, x.shape[0]))


def check_length_range(owner: str, lengths: Tensor, steps: int) -> None:
    """Every length must lie in ``[1, steps]``: a ``ValueError`` naming ``owner`` and the range found.

    While ``torch.export`` (or the ONNX exporter) traces, the values are unknown: the check goes into the
    graph (``torch._assert_async``), so the exported program fails when run on such lengths (ONNX has no
    assertion operator and drops it).
    """
    if torch.compiler.is_exporting():
        torch._assert_async(((lengths >= 1) & (lengths <= steps)).all(),
                            f"{owner}: lengths must lie in [1, T] (the padded length)")  # fmt: skip
        return
    lo, hi = int(lengths.min()), int(lengths.max())
    if lo < 1 or hi > steps:
        raise ValueError(f"{owner}: lengths must lie in [1, {steps}] (the padded length), got min {lo}, max {hi}")
