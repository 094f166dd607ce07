"""Univariate forecasting: sliding windows over a CSV column or a series shipped in an installed package."""

from __future__ import annotations

import csv
import math
import os
import warnings
from collections.abc import Callable, Sequence
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


def labelled_series(name: str) -> tuple[np.ndarray, np.ndarray]:
    """A labelled anomaly series shipped in the sktime wheel: ``(values (T,) float64, labels (T,) bool)``.

    ``"yahoo"``: 1000 points with 7 single-point anomalies; ``"mitdb"``: 7500 points with one labelled
    anomalous stretch (indices 6936-7287). The files are ``sktime/datasets/data/<name>/<name>.csv`` (columns
    ``data``, ``label``); the wheel names no loader or source for them, so their provenance (presumably
    Yahoo Webscope S5 and MIT-BIH) is not checked here. Offline: read from the installed package.
    """
    import sktime  # heavy import, kept local

    if name not in ("yahoo", "mitdb"):
        raise ValueError(f"labelled_series: name must be 'yahoo' or 'mitdb', got {name!r}")
    path = os.path.join(os.path.dirname(sktime.__file__), "datasets", "data", name, f"{name}.csv")
    values = read_csv_column(path, "data")
    return values, read_csv_column(path, "label") > 0


SERIES_SOURCES: dict[str, Callable[[], np.ndarray]] = {
    "sunspots": _sunspots,
    "air_passengers": _air_passengers,
    "lynx": _lynx,
}
SCALERS = ("standard", "minmax", "log_standard", "none")


def read_csv_cells(path: str | os.PathLike[str], columns: Sequence[str], owner: str) -> list[tuple[int, list[str]]]:
    """``(line number, [cell of each of columns])`` for every non-blank data row of a CSV file with a header."""
    rows = csv.reader(read_lines(path, owner))
    header = next(rows)
    for column in columns:
        if column not in header:
            raise ValueError(f"{owner}: {path} has no column {column!r}; columns: {header}")
    index = [header.index(column) for column in columns]
    cells = []
    for lineno, row in enumerate(rows, start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise ValueError(f"{owner}: {path}, line {lineno}: ragged row with {len(row)} "
                             f"cells, header has {len(header)}")
        cells.append((lineno, [row[i] for i in index]))
    if not cells:
        raise ValueError(f"{owner}: {path} has a header but no data rows")
    return cells


def read_csv_column(path: str | os.PathLike[str], column: str) -> np.ndarray:
    """Float64 values of one column of a CSV file with a header row; empty or non-numeric cells are errors."""
    values = []
    for lineno, (cell,) in read_csv_cells(path, [column], "read_csv_column"):
        try:
            value = float(cell)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise ValueError(f"read_csv_column: {path}, line {lineno}: {column}={cell!r} is missing or "
                             "not a finite number")
        values.append(value)
    return np.asarray(values, dtype=np.float64)


def check_timestamps(path: str | os.PathLike[str], column: str, freq: str | None = None) -> None:
    """The ``column`` of a CSV file must be regular timestamps: parseable, strictly increasing, no duplicate
    and none missing. Dates follow the frequency ``freq`` (a pandas offset alias such as ``"D"``, ``"MS"``;
    ``None``: inferred from the first three timestamps); numbers follow the step between the first two.
    seqforge does not fill gaps or drop duplicates: each is an error naming the lines, to be fixed in the
    file."""
    import pandas as pd  # heavy import, kept local (a dependency of statsmodels)

    owner = "check_timestamps"
    cells = read_csv_cells(path, [column], owner)
    lines, raw = [line for line, _ in cells], [cell for _, (cell,) in cells]
    try:
        times = pd.Index(pd.to_numeric(raw)) if _all_numbers(raw) else pd.DatetimeIndex(pd.to_datetime(raw))
    except (ValueError, TypeError) as err:
        raise ValueError(f"{owner}: {path}: time column {column!r} holds a value that is neither a number nor a "
                         f"date ({err})") from None
    duplicated = np.flatnonzero(times.duplicated())
    if duplicated.size:
        i = int(duplicated[0])
        first = int(np.flatnonzero(times == times[i])[0])
        raise ValueError(f"{owner}: {path}: duplicated timestamp {raw[i]!r} in {column!r} at lines {lines[first]} "
                         f"and {lines[i]}; keep one row per time")
    steps = np.diff(np.asarray(times.asi8 if isinstance(times, pd.DatetimeIndex) else times, dtype=np.float64))
    if (steps <= 0).any():
        i = int(np.flatnonzero(steps <= 0)[0]) + 1
        raise ValueError(f"{owner}: {path}: timestamps in {column!r} must increase; line {lines[i]} "
                         f"({raw[i]!r}) comes after line {lines[i - 1]} ({raw[i - 1]!r})")
    if len(times) < 3:
        return
    if isinstance(times, pd.DatetimeIndex):
        step = freq or pd.infer_freq(times[:3])
        if step is None:
            raise ValueError(f"{owner}: {path}: cannot infer the frequency of {column!r} from {raw[:3]}; pass freq=")
        expected = pd.date_range(times[0], times[-1], freq=step)
        missing = expected.difference(times)
        unexpected = times.difference(expected)
        if len(unexpected):
            i = times.get_loc(unexpected[0])
            raise ValueError(f"{owner}: {path}: line {lines[i]}: timestamp {raw[i]!r} in {column!r} is off the "
                             f"{step!r} grid that starts at {raw[0]!r}")
        gaps = [str(t.date()) for t in missing[:5]]
    else:  # numbers: the step is the first difference
        step = f"{steps[0]:g}"
        ratio = steps / steps[0]
        off = np.flatnonzero(np.abs(ratio - np.round(ratio)) > 1e-9)
        if off.size:
            i = int(off[0]) + 1
            raise ValueError(f"{owner}: {path}: line {lines[i]}: time {raw[i]!r} in {column!r} is off the step "
                             f"{step} that starts at {raw[0]!r}")
        gaps = [f"{times[i] + steps[0]:g}" for i in np.flatnonzero(np.round(ratio) > 1)[:5]]
    if gaps:
        raise ValueError(f"{owner}: {path}: {column!r} is missing timestamps at step {step!r}, first: {gaps}; "
                         "seqforge does not fill gaps: add the rows (with values) or cut the series")


def _all_numbers(cells: Sequence[str]) -> bool:
    try:
        [float(cell) for cell in cells]
    except ValueError:
        return False
    return True


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
        time_column: the CSV column of timestamps (dates or numbers), if the file has one: it must be regular,
            strictly increasing, without duplicates or gaps (see :func:`check_timestamps`; nothing is filled
            or dropped). freq: its pandas frequency (e.g. ``"MS"``), else inferred from the first three.
        stop: keep only the first ``stop`` points (e.g. sunspots up to 1955: ``stop=256``).
        window: history length W; horizon: forecast length H.
        test_size, val_size: number of target points in the test and validation blocks (each >= H).
        scaler: ``"standard"``, ``"minmax"``, ``"log_standard"`` (standardized log, for positive series
            with multiplicative trend) or ``"none"``.
        season: seasonal period of the naive forecast that scales MASE (``mase_scale``). When that naive
            forecast is exact on the training part (``mase_scale == 0``, e.g. a constant series), MASE is
            undefined: setup warns and the task reports it as NaN.
        batch_size, num_workers: DataLoader settings.

    A subclass that overrides :meth:`load_series` (e.g. a generated series) passes neither ``path`` nor
    ``source``.

    Batches: ``(history, lengths, target)``: float32 ``(B, W, 1)``, int64 ``(B,)`` (all ``W``), float32
    ``(B, H)``, both scaled. ``net_kwargs = {"input_size": 1, "horizon": H}``.

    Every value must be finite: a NaN or infinite target (from a CSV cell, a source or a generated series)
    is an error naming its position; nothing is imputed.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        column: str | None = None,
        source: str | None = None,
        time_column: str | None = None,
        freq: str | None = None,
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
        if (time_column is not None or freq is not None) and path is None:
            raise ValueError(f"{owner}: time_column= and freq= describe a CSV file (path=), got "
                             f"time_column={time_column!r}, freq={freq!r} without one")
        if scaler not in SCALERS:
            raise ValueError(f"{owner}: scaler must be one of {SCALERS}, got {scaler!r}")
        self.path, self.column, self.source = path, column, source
        self.time_column, self.freq = time_column, freq
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
            if self.time_column is not None:
                check_timestamps(self.path, self.time_column, self.freq)
            series = read_csv_column(self.path, self.column)
        return series[: self.stop]

    @property
    def test_start(self) -> int:
        """Index of the first test target in :attr:`series`."""
        assert self.series is not None
        return len(self.series) - self.test_size

    def build(self) -> dict[str, list[tuple[torch.Tensor, torch.Tensor]]]:
        series = self.load_series()
        bad = np.flatnonzero(~np.isfinite(series))
        if bad.size:
            raise ValueError(f"SeriesDataModule: the series has {bad.size} NaN or infinite values, the first at "
                             f"index {int(bad[0])} ({series[bad[0]]}); fill or cut them before (nothing is imputed)")
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
            if self.mase_scale == 0:
                warnings.warn(f"SeriesDataModule: the seasonal naive forecast (season={self.season}) is exact on "
                              "the training part (e.g. a constant series), so MASE is undefined: mase_scale=0 and "
                              "the task reports mase as NaN", stacklevel=2)
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
