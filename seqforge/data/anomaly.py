"""Anomaly detection on one labelled series: windows for training on normal data, scoring every point after.

Shipped series (read offline from the installed ``sktime`` wheel, ``sktime/datasets/data/<name>/<name>.csv``,
columns ``data``, ``label``; loaded by :func:`seqforge.data.series.labelled_series`):

- ``"yahoo"``: 1000 points of a series from Yahoo! Labs' "S5 - A Labeled Anomaly Detection Dataset"
  (ydata-labeled-time-series-anomalies-v1_0, Yahoo Webscope), 7 single-point anomalies, all after index 430;
  sktime's notebook calls its anomalies synthetic (S5's A2-A4 parts are synthetic), the file is not named.
  Licence: Yahoo Webscope distributes S5 under its own data agreement (research use), not an open licence.
- ``"mitdb"``: 7500 points of an ECG of the MIT-BIH Arrhythmia Database (Moody and Mark 2001, PhysioNet;
  Open Data Commons Attribution licence 1.0) with one labelled anomalous stretch, indices 6936-7287.

Both came into sktime (BSD 3-Clause) with its example notebook
``examples/07_detection_anomaly_changepoints.ipynb`` (sktime PR #7284, 2024), which names TSB-UAD
(TheDatumOrg) as the data source; the data keep their own terms. Nothing is downloaded; the split used is
written to ``<data_dir>/anomaly/<series_name>_split.csv`` (never into the package), so that
other tools can score the same points.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seqforge.data.base import SplitDataModule, check_positive_int, write_atomic
from seqforge.data.series import SCALERS, Scaler, labelled_series, read_csv_column

SOURCES = ("yahoo", "mitdb")


class AnomalyDataModule(SplitDataModule):
    """Windows of ``window`` points over a labelled series cut into three consecutive parts.

    Points ``[0, val_start)`` are the training part, ``[val_start, test_start)`` the validation part and
    ``[test_start, n)`` the test part. Training samples are the windows inside the training part (every
    ``train_stride``-th), without those that hold a labelled anomaly (the net learns what normal looks like;
    only training labels are read for this). Validation and test samples are the windows that *end* at each
    point of their part (their first points may lie in the part before: the past, never a label), so every
    point of validation and test gets a score. The scaler is fitted on the training part only.

    Args:
        source: a shipped series, ``"yahoo"`` or ``"mitdb"`` (see the module docstring); or
        path: a CSV file with a header, its values in ``column`` and its 0/1 labels in ``label_column``; or
        values, labels: the series and its labels in memory (``(T,)`` each; labels 0/1 or bool).
        val_start, test_start: first index of the validation and of the test part.
        window: points per window W (a forecaster sees the first ``W - 1`` and forecasts the last).
        train_stride: step between training windows.
        scaler: ``"standard"``, ``"minmax"`` or ``"none"`` (fitted on the training part).
        data_dir: where the split is written (``<data_dir>/anomaly/<series_name>_split.csv``); ``None``: not written.
        batch_size, num_workers: DataLoader settings.

    Batches: ``(window, lengths, index)``: float32 ``(B, W, 1)`` scaled, int64 ``(B,)`` (all ``W``), int64
    ``(B,)`` the index of each window's last point in the series. ``labels`` ``(T,)`` bool and ``parts``
    (``{"val": slice, "test": slice}``) let the task score points; ``net_kwargs = {"input_size": 1}``.

    Every value must be finite and labels must be one per point: anything else is an error naming the
    parameter and the first bad index; nothing is imputed.
    """

    def __init__(
        self,
        source: str | None = None,
        path: str | os.PathLike[str] | None = None,
        column: str = "data",
        label_column: str = "label",
        values: Sequence[float] | None = None,
        labels: Sequence[Any] | None = None,
        val_start: int = 400,
        test_start: int = 700,
        window: int = 32,
        train_stride: int = 1,
        scaler: str = "standard",
        data_dir: str | os.PathLike[str] | None = None,
        batch_size: int = 64,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size, num_workers)
        owner = "AnomalyDataModule"
        given = [name for name, value in (("source", source), ("path", path), ("values", values)) if value is not None]
        if len(given) != 1:
            raise ValueError(f"{owner}: pass exactly one of source=, path= or values= (with labels=), "
                             f"got {given or 'none'}")
        if source is not None and source not in SOURCES:
            raise ValueError(f"{owner}: source must be one of {SOURCES}, got {source!r}")
        if (values is None) != (labels is None):
            only = "values" if labels is None else "labels"
            raise ValueError(f"{owner}: values= and labels= go together, got only {only}=")
        if scaler not in SCALERS or scaler == "log_standard":
            raise ValueError(f"{owner}: scaler must be 'standard', 'minmax' or 'none', got {scaler!r}")
        self.source, self.path, self.column, self.label_column = source, path, column, label_column
        self.values_given, self.labels_given = values, labels
        self.val_start = check_positive_int(owner, "val_start", val_start)
        self.test_start = check_positive_int(owner, "test_start", test_start)
        self.window = check_positive_int(owner, "window", window)
        self.train_stride = check_positive_int(owner, "train_stride", train_stride)
        if self.window < 2:
            raise ValueError(f"{owner}: window must be >= 2 (a forecaster needs a history and a target), got {window}")
        if self.test_start <= self.val_start:
            raise ValueError(f"{owner}: test_start={test_start} must come after val_start={val_start}")
        self.scaler_kind = scaler
        self.data_dir = None if data_dir is None else Path(data_dir)
        self.scaler: Scaler | None = None
        self.series: np.ndarray | None = None  # (T,) original units
        self.labels: np.ndarray | None = None  # (T,) bool
        self.parts: dict[str, slice] = {}

    @property
    def series_name(self) -> str:
        """The series' name: the source, the CSV file's stem, or ``"series"`` for arrays."""
        return self.source or (Path(self.path).stem if self.path is not None else "series")

    def load_series(self) -> tuple[np.ndarray, np.ndarray]:
        """``(values (T,) float64, labels (T,) bool)``, checked: finite values, one 0/1 label per point."""
        owner = "AnomalyDataModule"
        if self.source is not None:
            return labelled_series(self.source)
        if self.path is not None:
            values, raw = read_csv_column(self.path, self.column), read_csv_column(self.path, self.label_column)
        else:
            values = np.asarray(self.values_given, dtype=np.float64)
            raw = np.asarray(self.labels_given, dtype=np.float64)
        if values.ndim != 1 or raw.ndim != 1:
            raise ValueError(f"{owner}: values and labels must be 1-D, got shapes {values.shape} and {raw.shape}")
        if len(raw) != len(values):
            raise ValueError(f"{owner}: labels must hold one label per point: the series has {len(values)} points, "
                             f"labels has {len(raw)}")
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise ValueError(f"{owner}: values holds {bad.size} NaN or infinite values, the first at index "
                             f"{int(bad[0])}; fill or cut them before (nothing is imputed)")
        wrong = np.flatnonzero((raw != 0) & (raw != 1))
        if wrong.size:
            raise ValueError(f"{owner}: labels must be 0 or 1, got {raw[wrong[0]]} at index {int(wrong[0])}")
        return values, raw.astype(bool)

    def build(self) -> dict[str, list[tuple[torch.Tensor, torch.Tensor]]]:
        owner = "AnomalyDataModule"
        values, labels = self.load_series()
        n, w = len(values), self.window
        if self.test_start >= n:
            raise ValueError(f"{owner}: test_start={self.test_start} leaves no test part in a series of {n} points")
        if self.val_start < w:
            raise ValueError(f"{owner}: the training part (val_start={self.val_start} points) is shorter than "
                             f"window={w}; the series needs at least one training window")
        self.series, self.labels = values, labels
        self.parts = {"val": slice(self.val_start, self.test_start), "test": slice(self.test_start, n)}
        if self.scaler is None:
            self.scaler = Scaler.fit(self.scaler_kind, values[: self.val_start])
        scaled = torch.from_numpy(self.scaler.transform(values).astype(np.float32)).unsqueeze(-1)  # (T, 1)

        def window_at(end: int) -> tuple[torch.Tensor, torch.Tensor]:
            return scaled[end - w + 1 : end + 1], torch.tensor(end)

        ends = range(w - 1, self.val_start, self.train_stride)
        train = [window_at(t) for t in ends if not labels[t - w + 1 : t + 1].any()]
        if not train:
            raise ValueError(f"{owner}: every training window of {w} points holds a labelled anomaly; use a smaller "
                             f"window or a later val_start")
        if self.data_dir is not None:
            self.write_split()
        return {
            "train": train,
            "val": [window_at(t) for t in range(self.val_start, self.test_start)],
            "test": [window_at(t) for t in range(self.test_start, n)],
        }

    def write_split(self) -> Path:
        """``<data_dir>/anomaly/<name>_split.csv``: ``index,value,label,part`` for every point."""
        assert self.data_dir is not None and self.series is not None and self.labels is not None
        part = np.where(np.arange(len(self.series)) < self.val_start, "train",
                        np.where(np.arange(len(self.series)) < self.test_start, "val", "test"))  # fmt: skip
        rows = [f"{i},{v!r},{int(y)},{p}" for i, (v, y, p) in enumerate(zip(self.series.tolist(), self.labels, part))]
        path = self.data_dir / "anomaly" / f"{self.series_name}_split.csv"
        write_atomic(path, "\n".join(["index,value,label,part", *rows]) + "\n")
        return path

    @property
    def net_kwargs(self) -> dict[str, int]:
        return {"input_size": 1}

    def state_dict(self) -> dict[str, Any]:
        """Plain-data fitted state: the scaler."""
        self._require_fitted(self.scaler)
        assert self.scaler is not None
        return {"scaler": asdict(self.scaler)}

    def load_fitted_state(self, state_dict: dict[str, Any]) -> None:
        self.scaler = Scaler(**state_dict["scaler"])
