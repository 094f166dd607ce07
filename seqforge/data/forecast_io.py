"""Forecasts as a CSV file: one row per series and forecast step, with the interval bounds beside."""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from seqforge.metrics import level_name


def write_forecast_csv(
    path: str | os.PathLike[str],
    prediction: Any,
    intervals: Mapping[float, tuple[Any, Any]] | None = None,
    series: Sequence[str] | None = None,
    times: Any = None,
) -> None:
    """Write ``prediction`` ``(N, H)`` (N series or windows, H steps) to ``path`` as CSV.

    Columns: ``series``, ``step`` (1..H), ``time`` (only with ``times``), ``prediction``, then
    ``lower_<pct>``, ``upper_<pct>`` per interval level (e.g. ``lower_80``), levels ascending.

    Args:
        prediction: array-like ``(N, H)`` (``(H,)`` is one series), e.g. from :meth:`ForecastingTask.forecast`.
        intervals: ``{level: (lower, upper)}``, each the shape of ``prediction``.
        series: N names (default ``"0"``, ``"1"``, ...).
        times: ``(N, H)`` labels of the forecast times (dates or numbers), written as they print.
    """
    owner = "write_forecast_csv"
    pred = np.asarray(prediction, dtype=np.float64)
    pred = pred[None] if pred.ndim == 1 else pred
    if pred.ndim != 2:
        raise ValueError(f"{owner}: prediction must be (N, H) or (H,), got shape {np.shape(prediction)}")
    n, h = pred.shape
    bounds = {}
    for level, (lower, upper) in sorted((intervals or {}).items()):
        pair = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)
        if any(b.size != pred.size for b in pair):
            raise ValueError(f"{owner}: the {level:.0%} interval bounds must have prediction's shape {pred.shape}, "
                             f"got {pair[0].shape} and {pair[1].shape}")
        bounds[level] = (pair[0].reshape(pred.shape), pair[1].reshape(pred.shape))
    names = [str(i) for i in range(n)] if series is None else [str(s) for s in series]
    if len(names) != n:
        raise ValueError(f"{owner}: series has {len(names)} names for {n} forecasts")
    labels = None
    if times is not None:
        labels = np.asarray(times, dtype=object)
        if labels.size != pred.size:
            raise ValueError(f"{owner}: times must have prediction's shape {pred.shape}, got {labels.shape}")
        labels = labels.reshape(pred.shape)
    header = ["series", "step", *(["time"] if labels is not None else []), "prediction"]
    for level in bounds:
        header += [f"lower_{level_name(level)}", f"upper_{level_name(level)}"]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for i in range(n):
            for k in range(h):
                time = [labels[i, k]] if labels is not None else []
                row: list[Any] = [names[i], k + 1, *time, f"{pred[i, k]:.6g}"]
                for lower, upper in bounds.values():
                    row += [f"{lower[i, k]:.6g}", f"{upper[i, k]:.6g}"]
                writer.writerow(row)
