"""Univariate forecasting: sliding windows over a CSV column or a series shipped in an installed package."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from seqforge.data.base import SplitDataModule, check_positive_int, read_lines


def _sunspots() -> np.ndarray:
    import statsmodels.datasets.sunspots as sunspots  # heavy import, kept local

    return sunspots.load_pandas().data["SUNACTIVITY"].to_numpy(dtype=np.float64)  # yearly, 1700-2008


def _air_passengers() -> np.ndarray:
    from pmdarima.datasets import load_airpassengers  # heavy import, kept local

    return np.asarray(load_airpassengers(), dtype=np.float64)  # monthly, 1949-1960


def _lynx() -> np.ndarray:
    from pmdarima.datasets import load_lynx  # heavy import, kept local

    return np.asarray(load_lynx(), dtype=np.float64)  # yearly, 1821-1934


SERIES_SOURCES: dict[str, Callable[[], np.ndarray]] = {
    "sunspots": _sunspots,
    "air_passengers": _air_passengers,
    "lynx": _lynx,
}
SCALERS = ("standard", "minmax", "log_standard", "none")


def read_csv_column(path: str | os.PathLike[str], column: str) -> np.ndarray:
    """Float64 values of one column of a CSV file with a header row; empty or non-numeric cells are errors."""
    lines = read_lines(path, "read_csv_column")
    rows = csv.reader(lines)
    header = next(rows)
    if column not in header:
        raise ValueError(f"read_csv_column: {path} has no column {column!r}; columns: {header}")
    col = header.index(column)
    values = []
    for lineno, row in enumerate(rows, start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise ValueError(f"read_csv_column: {path}, line {lineno}: ragged row with {len(row)} "
                             f"cells, header has {len(header)}")
        try:
            value = float(row[col])
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise ValueError(f"read_csv_column: {path}, line {lineno}: {column}={row[col]!r} is missing or "
                             "not a finite number")
        values.append(value)
    if not values:
        raise ValueError(f"read_csv_column: {path} has a header but no data rows")
    return np.asarray(values, dtype=np.float64)


@dataclass
class Scaler:
    """Affine scaling ``(x - shift) / scale`` fitted on training data; plain floats, so it saves as data.

    ``log_standard`` standardizes ``log(x)`` instead (positive series with multiplicative trend and
    seasonality, such as AirPassengers); its inverse is ``exp(x * scale + shift)``.
    """

    kind: str = "standard"
    shift: float = 0.0
    scale: float = 1.0

    @classmethod
    def fit(cls, kind: str, values: np.ndarray) -> Scaler:
        """``standard``: mean and std; ``minmax``: min and range (maps to [0, 1]); ``log_standard``: mean
        and std of ``log(values)``; ``none``: identity."""
        if kind not in SCALERS:
            raise ValueError(f"Scaler: kind must be one of {SCALERS}, got {kind!r}")
        if kind == "log_standard":
            if values.min() <= 0:
                raise ValueError(f"Scaler: log_standard needs a positive series, got a minimum of {values.min()}")
            values = np.log(values)
        if kind in ("standard", "log_standard"):
            shift, scale = float(values.mean()), float(values.std())
        elif kind == "minmax":
            shift, scale = float(values.min()), float(values.max() - values.min())
        else:
            shift, scale = 0.0, 1.0
        return cls(kind, shift, scale if scale > 0 else 1.0)

    def transform(self, x: Any) -> Any:
        """Scale a numpy array or tensor (any shape)."""
        if self.kind == "log_standard":
            x = torch.log(x) if isinstance(x, torch.Tensor) else np.log(x)
        return (x - self.shift) / self.scale

    def inverse_transform(self, x: Any) -> Any:
        """Back to original units (any shape)."""
        y = x * self.scale + self.shift
        if self.kind == "log_standard":
            return torch.exp(y) if isinstance(y, torch.Tensor) else np.exp(y)
        return y


class SeriesDataModule(SplitDataModule):
    """Univariate forecasting of the next ``horizon`` points from the previous ``window`` points.

    The last ``test_size`` points are the test targets, each forecast from the true history before it
    (with ``horizon=1``: one-step-ahead over all ``test_size`` points); the ``val_size`` points before
    them are the validation targets; training targets come before those. The scaler is fitted on the
    training part only (the points before the validation block).

    Args:
        path: a CSV file with a header row, read with ``column``; or
        source: a series shipped offline: ``"sunspots"`` (statsmodels, yearly 1700-2008),
            ``"air_passengers"`` (pmdarima, monthly 1949-1960), ``"lynx"`` (pmdarima, yearly 1821-1934).
        column: the CSV column (with ``path``).
        stop: keep only the first ``stop`` points (e.g. sunspots up to 1955: ``stop=256``).
        window: history length W; horizon: forecast length H.
        test_size, val_size: number of target points in the test and validation blocks (each >= H).
        scaler: ``"standard"``, ``"minmax"``, ``"log_standard"`` (standardized log, for positive series
            with multiplicative trend) or ``"none"``.
        season: seasonal period of the naive forecast that scales MASE (``mase_scale``).
        batch_size, num_workers: DataLoader settings.

    A subclass that overrides :meth:`load_series` (e.g. a generated series) passes neither ``path`` nor
    ``source``.

    Batches: ``(history, lengths, target)``: float32 ``(B, W, 1)``, int64 ``(B,)`` (all ``W``), float32
    ``(B, H)``, both scaled. ``net_kwargs = {"input_size": 1, "horizon": H}``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        column: str | None = None,
        source: str | None = None,
        stop: int | None = None,
        window: int = 12,
        horizon: int = 1,
        test_size: int = 12,
        val_size: int = 12,
        scaler: str = "standard",
        season: int = 1,
        batch_size: int = 32,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size, num_workers)
        owner = "SeriesDataModule"
        generated = type(self).load_series is not SeriesDataModule.load_series  # a subclass makes its series
        if not generated and (path is None) == (source is None):
            raise ValueError(f"{owner}: pass exactly one of path= or source=, got path={path!r}, "
                             f"source={source!r}")
        if source is not None and source not in SERIES_SOURCES:
            raise ValueError(f"{owner}: unknown source {source!r}; available: {sorted(SERIES_SOURCES)}")
        if path is not None and not column:
            raise ValueError(f"{owner}: path= needs column= (the CSV column to forecast)")
        if scaler not in SCALERS:
            raise ValueError(f"{owner}: scaler must be one of {SCALERS}, got {scaler!r}")
        self.path, self.column, self.source = path, column, source
        self.stop = None if stop is None else check_positive_int(owner, "stop", stop)
        self.window = check_positive_int(owner, "window", window)
        self.horizon = check_positive_int(owner, "horizon", horizon)
        self.test_size = check_positive_int(owner, "test_size", test_size)
        self.val_size = check_positive_int(owner, "val_size", val_size)
        self.season = check_positive_int(owner, "season", season)
        for name in ("test_size", "val_size"):
            if getattr(self, name) < self.horizon:
                raise ValueError(f"{owner}: {name}={getattr(self, name)} must be >= horizon={self.horizon}")
        self.scaler_kind = scaler
        self.scaler: Scaler | None = None
        self.mase_scale: float | None = None
        self.series: np.ndarray | None = None

    def load_series(self) -> np.ndarray:
        """The raw series (float64, original units), cut at ``stop``."""
        if self.source is not None:
            series = SERIES_SOURCES[self.source]()
        else:
            assert self.path is not None and self.column is not None
            series = read_csv_column(self.path, self.column)
        return series[: self.stop]

    @property
    def test_start(self) -> int:
        """Index of the first test target in :attr:`series`."""
        assert self.series is not None
        return len(self.series) - self.test_size

    def build(self) -> dict[str, list[tuple[torch.Tensor, torch.Tensor]]]:
        series = self.load_series()
        n, w, h = len(series), self.window, self.horizon
        train_end = n - self.test_size - self.val_size  # points before this index are the training part
        if train_end < w + h:
            raise ValueError(
                f"SeriesDataModule: the series has {n} points; window={w} + horizon={h} need at least "
                f"{w + h} training points before val_size={self.val_size} + test_size={self.test_size}, "
                f"but only {max(train_end, 0)} remain")
        self.series = series
        train_part = series[:train_end]
        if self.scaler is None:
            self.scaler = Scaler.fit(self.scaler_kind, train_part)
        elif self.scaler.kind == "log_standard" and series.min() <= 0:
            raise ValueError(f"SeriesDataModule: the fitted log_standard scaler (from a checkpoint or an earlier "
                             f"setup) needs a positive series, got a minimum of {series.min()}")
        if self.mase_scale is None:
            diffs = np.abs(train_part[self.season :] - train_part[: -self.season])
            self.mase_scale = float(diffs.mean()) if diffs.size else 1.0
        scaled = torch.from_numpy(self.scaler.transform(series).astype(np.float32))

        def windows(first: int, last: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
            """Samples whose targets ``scaled[t : t + h]`` start at ``t`` in ``[first, last]``."""
            return [(scaled[t - w : t].unsqueeze(-1), scaled[t : t + h]) for t in range(first, last + 1)]

        return {
            "train": windows(w, train_end - h),
            "val": windows(train_end, train_end + self.val_size - h),
            "test": windows(n - self.test_size, n - h),
        }

    @property
    def net_kwargs(self) -> dict[str, int]:
        return {"input_size": 1, "horizon": self.horizon}

    def state_dict(self) -> dict[str, Any]:
        """Plain-data fitted state: the scaler and the MASE scale."""
        self._require_fitted(self.scaler, self.mase_scale)
        assert self.scaler is not None
        return {"scaler": asdict(self.scaler), "mase_scale": self.mase_scale}

    def load_fitted_state(self, state_dict: dict[str, Any]) -> None:
        self.scaler = Scaler(**state_dict["scaler"])
        self.mase_scale = state_dict["mase_scale"]
