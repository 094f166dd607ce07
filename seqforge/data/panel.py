"""Many series in one long table: windows for one global forecaster, with covariates and static features.

The table has one row per series and time: ``series_id, time, target, covariates...`` (a CSV file read
with pandas, or a frame shipped offline, :data:`PANEL_SOURCES`). Every series is split by time: its last
``test_size`` targets are test targets, the ``val_size`` before them validation targets, the rest
training targets; each forecast reads the true history before it, of that series only.

Offline source:

- ``"us_macro"``: 8 quarterly US growth rates (100 x log change of realgdp, realcons, realinv, realgovt,
  realdpi, cpi, m1 and pop), 1959Q2-2009Q3, 202 quarters each, from ``statsmodels.datasets.macrodata``
  (public domain; compiled by Skipper Seabold from FRED, Federal Reserve Bank of St. Louis, and the US
  Bureau of Labor Statistics). Past covariates: ``tbilrate`` and ``unemp`` (the same for every series);
  known-future covariates: ``quarter_sin``, ``quarter_cos`` (the calendar quarter); static categorical
  features: ``variable`` (the series itself) and ``kind`` (``real``, ``nominal`` or ``population``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from seqforge.data.base import SplitDataModule, check_positive_int
from seqforge.data.collate import pad_sequences

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

PANEL_SCALERS = ("standard", "none")
US_MACRO_KIND = {"realgdp": "real", "realcons": "real", "realinv": "real", "realgovt": "real",
                 "realdpi": "real", "cpi": "nominal", "m1": "nominal", "pop": "population"}  # fmt: skip


def us_macro() -> pd.DataFrame:
    """The ``"us_macro"`` panel (see the module docstring) as a long frame, one row per variable and quarter."""
    import pandas as pd  # heavy imports, kept local
    import statsmodels.datasets.macrodata as macrodata

    data = macrodata.load_pandas().data
    quarter = data["quarter"].astype(int)
    times = pd.PeriodIndex.from_fields(year=data["year"].astype(int), quarter=quarter, freq="Q").to_timestamp()
    frames = []
    for variable, kind in US_MACRO_KIND.items():
        growth = 100 * np.diff(np.log(data[variable].to_numpy(np.float64)))  # percent per quarter
        frames.append(pd.DataFrame({
            "series_id": variable, "time": times[1:], "target": growth,
            "tbilrate": data["tbilrate"].to_numpy()[1:], "unemp": data["unemp"].to_numpy()[1:],
            "quarter_sin": np.sin(2 * np.pi * quarter[1:] / 4), "quarter_cos": np.cos(2 * np.pi * quarter[1:] / 4),
            "variable": variable, "kind": kind,
        }))  # fmt: skip
    return pd.concat(frames, ignore_index=True)


def is_dates(times: pd.Series) -> bool:
    """Whether a parsed time column holds dates (else numbers)."""
    import pandas as pd

    return bool(pd.api.types.is_datetime64_any_dtype(times))


def time_label(t: Any) -> str:
    """A time as the forecast CSV writes it: ``2009-10-01`` (midnight dates), ``2009-10-01 06:00:00``, ``17``."""
    import pandas as pd

    if isinstance(t, pd.Timestamp):
        return str(t.date()) if t == t.normalize() else str(t)
    return f"{t:g}"


PANEL_SOURCES: dict[str, Callable[[], pd.DataFrame]] = {"us_macro": us_macro}


@dataclass
class SeriesScalers:
    """One affine scaling ``(x - shift[i]) / scale[i]`` per series ``i``, fitted on that series' training
    targets; plain lists, so it saves as data. ``kind``: ``"standard"`` (mean and std) or ``"none"``."""

    kind: str
    shift: list[float]
    scale: list[float]

    @classmethod
    def fit(cls, kind: str, parts: Sequence[np.ndarray]) -> SeriesScalers:
        """One scaler per array of ``parts`` (a series' training targets; each must vary)."""
        if kind not in PANEL_SCALERS:
            raise ValueError(f"SeriesScalers: kind must be one of {PANEL_SCALERS}, got {kind!r}")
        if kind == "none":
            return cls(kind, [0.0] * len(parts), [1.0] * len(parts))
        return cls(kind, [float(p.mean()) for p in parts], [float(p.std()) for p in parts])

    def rows(self, series: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        """``(shift, scale)`` of each row's series ``series`` ``(B,)``, shaped ``(B, 1, ...)`` to broadcast with
        ``like`` ``(B, ...)``."""
        shape = (-1,) + (1,) * (like.dim() - 1)
        index = series.to(torch.long).cpu()
        shift = torch.tensor(self.shift, dtype=like.dtype)[index].view(shape).to(like.device)
        scale = torch.tensor(self.scale, dtype=like.dtype)[index].view(shape).to(like.device)
        return shift, scale

    def inverse_transform(self, x: Tensor, series: Tensor) -> Tensor:
        """Back to original units: row ``b`` of ``x`` ``(B, ...)`` belongs to series ``series[b]``."""
        shift, scale = self.rows(series, x)
        return x * scale + shift


def collate_panel(batch: Sequence[tuple[Tensor, Tensor, Tensor, Tensor, int]]) -> tuple[Tensor, ...]:
    """``(history, target, future, static, series)`` samples -> ``(history, lengths, target, future, static,
    series)``: ``(B, W, C)`` float, ``(B,)`` int64, ``(B, H)``, ``(B, H, F)``, ``(B, S)`` int64, ``(B,)`` int64."""
    history, target, future, static, series = zip(*batch)
    padded, lengths = pad_sequences(history)
    return (padded, lengths, torch.stack(target), torch.stack(future), torch.stack(static),
            torch.tensor(series, dtype=torch.long))  # fmt: skip


@dataclass
class Series:
    """One series of the table, checked: ``times`` (n,), ``target`` (n,) float64 (the observed part),
    ``past`` (n, Cp), ``future`` (n + extra, Cf) over the observed and the future rows, ``static`` the
    raw categories, ``future_times`` the times of the future rows (those after the last target)."""

    name: str
    times: Any
    target: np.ndarray
    past: np.ndarray
    future: np.ndarray
    static: list[str]
    future_times: Any


class PanelDataModule(SplitDataModule):
    """A global forecaster over many series of one long table: the next ``horizon`` targets of a series from
    its previous ``window`` rows.

    Args:
        path: a CSV file (read with pandas), one row per series and time; or
        source: a table shipped offline (:data:`PANEL_SOURCES`: ``"us_macro"``).
        series_column, time_column, target: the column names of the series id, the time (numbers or
            dates) and the value to forecast.
        past_covariates: columns known up to the forecast time only (read in the history window).
        future_covariates: columns known ahead (calendar, planned prices): read in the history window and
            over the horizon of each forecast.
        static_categoricals: columns constant within a series (store, product group), embedded by the net.
        freq: the pandas frequency of date times (``"QS"``, ``"D"``); ``None``: inferred from the first
            series. Number times step by the smallest difference of each series.
        window: history length W; horizon: forecast length H.
        test_size, val_size: the test and validation targets of every series (each >= H); the windows
            whose targets all lie in that block.
        scaler: ``"standard"`` (per series, fitted on its training targets only) or ``"none"``. Covariates
            are standardized per column over the training rows of all series.
        season: the period of the naive forecast that scales MASE, per series, on its training targets.
        batch_size, num_workers: DataLoader settings.

    Checks, each a ``ValueError`` naming the series, the column and the time (nothing is imputed, filled
    or dropped): a missing column; a time that is neither a number nor a date; a duplicated time, a time
    off the series' grid or a missing one (a gap); a NaN target before the series' last target; a NaN
    covariate; a static value that changes within a series; a series too short for one training window
    plus its validation and test blocks; a series constant over its training part (it cannot be scaled
    and its MASE is undefined). Rows may come in any order (sorted by time within each series).

    Rows after a series' last target (empty target) are its *future rows*: they are not trained on;
    :meth:`forecast_inputs` forecasts them, so they need every known-future covariate (their past
    covariates may be empty). A series without future rows is forecast past its end only when the net
    has no known-future covariates.

    Batches: ``(history, lengths, target, future, static, series)`` (:func:`collate_panel`): the history
    holds the scaled target, then the past covariates, then the known-future covariates (``input_size =
    1 + Cp + Cf``), ``future`` the known-future covariates over the horizon, ``static`` the category ids,
    ``series`` the index of the row's series in :attr:`series_ids`. Windows never cross two series.
    """

    collate_fn = staticmethod(collate_panel)

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        source: str | None = None,
        series_column: str = "series_id",
        time_column: str = "time",
        target: str = "target",
        past_covariates: Sequence[str] = (),
        future_covariates: Sequence[str] = (),
        static_categoricals: Sequence[str] = (),
        freq: str | None = None,
        window: int = 16,
        horizon: int = 4,
        test_size: int = 8,
        val_size: int = 8,
        scaler: str = "standard",
        season: int = 1,
        batch_size: int = 64,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size, num_workers)
        owner = type(self).__name__
        if (path is None) == (source is None):
            raise ValueError(f"{owner}: pass exactly one of path= or source=, got path={path!r}, source={source!r}")
        if source is not None and source not in PANEL_SOURCES:
            raise ValueError(f"{owner}: unknown source {source!r}; available: {sorted(PANEL_SOURCES)}")
        if scaler not in PANEL_SCALERS:
            raise ValueError(f"{owner}: scaler must be one of {PANEL_SCALERS}, got {scaler!r}")
        self.path, self.source, self.freq = path, source, freq
        self.series_column, self.time_column, self.target = series_column, time_column, target
        self.past_covariates, self.future_covariates = list(past_covariates), list(future_covariates)
        self.static_categoricals = list(static_categoricals)
        columns = [series_column, time_column, target, *self.past_covariates, *self.future_covariates,
                   *self.static_categoricals]  # fmt: skip
        repeated = sorted({c for c in columns if columns.count(c) > 1})
        if repeated:
            raise ValueError(f"{owner}: each column may have one role only; {repeated} appear more than once")
        self.window = check_positive_int(owner, "window", window)
        self.horizon = check_positive_int(owner, "horizon", horizon)
        self.test_size = check_positive_int(owner, "test_size", test_size)
        self.val_size = check_positive_int(owner, "val_size", val_size)
        self.season = check_positive_int(owner, "season", season)
        for name in ("test_size", "val_size"):
            if getattr(self, name) < self.horizon:
                raise ValueError(f"{owner}: {name}={getattr(self, name)} must be >= horizon={self.horizon}")
        self.scaler_kind = scaler
        # fitted state (plain data): series names, per-series scalers and MASE scales, covariate scaling,
        # the categories of each static column
        self.series_ids: list[str] | None = None
        self.scaler: SeriesScalers | None = None
        self.mase_scale: list[float] | None = None
        self.covariate_shift: list[float] | None = None
        self.covariate_scale: list[float] | None = None
        self.categories: list[list[str]] | None = None
        self.series: list[Series] = []
        self.grid_freq: str | None = freq

    # ------------------------------------------------------------------------------------ reading
    def read_table(self, path: str | os.PathLike[str] | None = None) -> list[Series]:
        """The table's series, checked (see the class docstring), in order of first appearance."""
        import pandas as pd  # heavy import, kept local

        owner = type(self).__name__
        if path is not None or self.source is None:
            where = path if path is not None else self.path
            assert where is not None
            frame = pd.read_csv(where, dtype={self.series_column: str})
        else:
            where = f"source {self.source!r}"
            frame = PANEL_SOURCES[self.source]()
        covariates = [*self.past_covariates, *self.future_covariates]
        needed = [self.series_column, self.time_column, self.target, *covariates, *self.static_categoricals]
        missing = [c for c in needed if c not in frame.columns]
        if missing:
            raise ValueError(f"{owner}: {where} has no column(s) {missing}; columns: {list(frame.columns)}")
        if frame.empty:
            raise ValueError(f"{owner}: {where} has no rows")
        unnamed = np.flatnonzero(frame[self.series_column].isna().to_numpy())
        if unnamed.size:
            raise ValueError(f"{owner}: {where}: column {self.series_column!r} is empty in {unnamed.size} row(s), the "
                             f"first at time {frame[self.time_column].iloc[unnamed[0]]}; every row needs its series")
        for column in (self.target, *covariates):
            values = pd.to_numeric(frame[column], errors="coerce")
            bad = values.isna() & frame[column].notna()
            if bad.any():
                row = frame[bad].iloc[0]
                raise ValueError(f"{owner}: {where}: series {row[self.series_column]!r}, column {column!r}, time "
                                 f"{row[self.time_column]}: {row[column]!r} is not a number")
            frame[column] = values.astype(np.float64)
        frame[self.time_column] = self._parse_times(frame, where)
        freq = self.freq
        series: list[Series] = []
        for name, rows in frame.groupby(self.series_column, sort=False):
            rows = rows.sort_values(self.time_column, kind="stable")
            if freq is None and is_dates(rows[self.time_column]) and len(rows) >= 3:
                freq = pd.infer_freq(pd.DatetimeIndex(rows[self.time_column].iloc[:3]))
            series.append(self._check_series(str(name), rows, freq, where))
        self.grid_freq = freq  # given or inferred: the step of forecast times past a series' end
        return series

    def _parse_times(self, frame: pd.DataFrame, where: Any) -> pd.Series:
        import pandas as pd

        raw = frame[self.time_column]
        if is_dates(raw):
            return raw
        numbers = pd.to_numeric(raw, errors="coerce")
        if numbers.notna().all():
            return numbers
        times = pd.to_datetime(raw, errors="coerce")
        bad = times.isna()
        if bad.any():
            row = frame[bad].iloc[0]
            raise ValueError(f"{type(self).__name__}: {where}: series {row[self.series_column]!r}, column "
                             f"{self.time_column!r}: {row[self.time_column]!r} is neither a number nor a date")
        return times

    def _check_series(self, name: str, rows: pd.DataFrame, freq: str | None, where: Any) -> Series:
        import pandas as pd

        owner, tcol = type(self).__name__, self.time_column
        at = f"{owner}: {where}: series {name!r}"
        times = rows[tcol].reset_index(drop=True)
        duplicated = times.duplicated()
        if duplicated.any():
            raise ValueError(f"{at}: duplicated time {times[duplicated].iloc[0]} in {tcol!r}; keep one row per time")
        if is_dates(times):
            if freq is None:
                raise ValueError(f"{at}: cannot infer the frequency of {tcol!r} from its first times; pass freq=")
            grid = pd.date_range(times.iloc[0], times.iloc[-1], freq=freq)
            off = pd.DatetimeIndex(times).difference(grid)
            if len(off):
                raise ValueError(f"{at}: time {off[0]} in {tcol!r} is off the {freq!r} grid that starts at "
                                 f"{times.iloc[0]}")
            gaps = list(grid.difference(pd.DatetimeIndex(times))[:3])
        else:
            steps = np.diff(times.to_numpy(np.float64))
            step = steps.min() if steps.size else 1.0
            ratio = steps / step
            gaps = [times.iloc[i] + step for i in np.flatnonzero(np.round(ratio) > 1)[:3]]
            off = np.flatnonzero(np.abs(ratio - np.round(ratio)) > 1e-9)
            if off.size:
                raise ValueError(f"{at}: time {times.iloc[off[0] + 1]} in {tcol!r} is off the step {step:g}")
        if gaps:
            raise ValueError(f"{at}: missing times in {tcol!r} (a gap), first: {[str(g) for g in gaps]}; "
                             "nothing is filled: add the rows (with values) or cut the series")
        target = rows[self.target].to_numpy(np.float64)
        observed = np.flatnonzero(~np.isnan(target))
        if not observed.size:
            raise ValueError(f"{at}: column {self.target!r} is empty everywhere")
        n = int(observed[-1]) + 1  # rows after the last target are future rows
        holes = np.flatnonzero(np.isnan(target[:n]))
        if holes.size:
            raise ValueError(f"{at}: column {self.target!r} is NaN at time {times[holes[0]]} (before the series' "
                             "last target; nothing is imputed)")
        for columns, until, role in ((self.past_covariates, n, "past"), (self.future_covariates,
                                     min(len(rows), n + self.horizon), "known-future")):  # fmt: skip
            for column in columns:
                values = rows[column].to_numpy(np.float64)[:until]
                holes = np.flatnonzero(np.isnan(values))
                if holes.size:
                    raise ValueError(f"{at}: {role} covariate {column!r} is missing at time {times[holes[0]]}"
                                     + (" (a future row: known-future covariates are read over the horizon)"
                                        if holes[0] >= n else ""))
        static = []
        for column in self.static_categoricals:
            values = rows[column].astype(str).unique()
            if rows[column].isna().any() or len(values) > 1:
                raise ValueError(f"{at}: static column {column!r} must hold one value per series, got "
                                 f"{sorted(rows[column].astype(str).unique())}")
            static.append(str(values[0]))
        future = rows[self.future_covariates].to_numpy(np.float64)[: n + self.horizon] \
            if self.future_covariates else np.zeros((min(len(rows), n + self.horizon), 0))  # fmt: skip
        return Series(name, times[:n], target[:n], rows[self.past_covariates].to_numpy(np.float64)[:n]
                      if self.past_covariates else np.zeros((n, 0)), future, static, times[n:n + self.horizon])

    # ------------------------------------------------------------------------------------ fitting
    def train_end(self, s: Series) -> int:
        """Number of training rows of series ``s``: its targets before the validation block."""
        return len(s.target) - self.test_size - self.val_size

    def fit(self, series: list[Series]) -> None:
        """Fit the scalers, MASE scales and categories on the training rows of ``series``."""
        owner, w, h = type(self).__name__, self.window, self.horizon
        for s in series:
            if self.train_end(s) < w + h:
                raise ValueError(f"{owner}: series {s.name!r} has {len(s.target)} targets; window={w} + horizon={h} "
                                 f"+ val_size={self.val_size} + test_size={self.test_size} need at least "
                                 f"{w + h + self.val_size + self.test_size}: drop the series or shorten window")
            part = s.target[: self.train_end(s)]
            if part.std() == 0:
                raise ValueError(f"{owner}: series {s.name!r} is constant ({part[0]:g}) over its training part "
                                 f"(times {s.times.iloc[0]} to {s.times.iloc[len(part) - 1]}): it cannot be "
                                 "scaled and its MASE is undefined; drop the series")
        parts = [s.target[: self.train_end(s)] for s in series]
        self.series_ids = [s.name for s in series]
        self.scaler = SeriesScalers.fit(self.scaler_kind, parts)
        self.mase_scale = [float(np.abs(p[self.season :] - p[: -self.season]).mean()) for p in parts]
        train_rows = [np.concatenate([s.past, s.future[: len(s.target)]], axis=1)[: self.train_end(s)]
                      for s in series]  # fmt: skip
        rows = np.concatenate(train_rows)
        std = rows.std(axis=0)
        self.covariate_shift = rows.mean(axis=0).tolist()
        self.covariate_scale = np.where(std > 0, std, 1.0).tolist()
        self.categories = [sorted({s.static[i] for s in series}) for i in range(len(self.static_categoricals))]

    # ------------------------------------------------------------------------------------ samples
    def encode(self, s: Series) -> tuple[int, Tensor, Tensor, Tensor]:
        """Series ``s`` with the fitted state: ``(index, scaled target (n,), covariates (n + extra, Cp + Cf)
        (past covariates are zero in the future rows), static ids (S,))``."""
        assert self.series_ids is not None and self.scaler is not None and self.categories is not None
        owner = type(self).__name__
        if s.name not in self.series_ids:
            raise ValueError(f"{owner}: series {s.name!r} was not among the training series (the scalers are "
                             f"per series); known: {self.series_ids[:10]}{' ...' if len(self.series_ids) > 10 else ''}")
        i = self.series_ids.index(s.name)
        target = (s.target - self.scaler.shift[i]) / self.scaler.scale[i]
        past = np.zeros((len(s.future), s.past.shape[1]))
        past[: len(s.past)] = s.past
        covariates = (np.concatenate([past, s.future], axis=1) - np.asarray(self.covariate_shift)) / np.asarray(
            self.covariate_scale)
        ids = []
        for column, categories, value in zip(self.static_categoricals, self.categories, s.static):
            if value not in categories:
                raise ValueError(f"{owner}: series {s.name!r}: static column {column!r} has the value {value!r}, "
                                 f"unseen in training; known: {categories}")
            ids.append(categories.index(value))
        return (i, torch.tensor(target, dtype=torch.float32), torch.tensor(covariates, dtype=torch.float32),
                torch.tensor(ids, dtype=torch.long))  # fmt: skip

    def sample(self, encoded: tuple[int, Tensor, Tensor, Tensor], t: int) -> tuple[Tensor, Tensor, Tensor, Tensor, int]:
        """The window whose first target is row ``t``: history rows ``t - W .. t - 1``, targets ``t .. t + H - 1``."""
        i, target, covariates, static = encoded
        w, h, cf = self.window, self.horizon, len(self.future_covariates)
        history = torch.cat([target[t - w : t, None], covariates[t - w : t]], dim=1)  # (W, 1 + Cp + Cf)
        future = covariates[t : t + h, covariates.shape[1] - cf :]  # (H, Cf)
        return history, target[t : t + h], future, static, i

    def build(self) -> dict[str, list[tuple[Tensor, Tensor, Tensor, Tensor, int]]]:
        self.series = self.read_table()
        if self.scaler is None:
            self.fit(self.series)
        splits: dict[str, list[Any]] = {"train": [], "val": [], "test": []}
        w, h = self.window, self.horizon
        for s in self.series:
            encoded, end, n = self.encode(s), self.train_end(s), len(s.target)
            for split, first, last in (("train", w, end - h), ("val", end, end + self.val_size - h),
                                       ("test", n - self.test_size, n - h)):  # fmt: skip
                splits[split] += [self.sample(encoded, t) for t in range(first, last + 1)]
        log.info(f"{type(self).__name__}: {len(self.series)} series, windows: "
                 + ", ".join(f"{k} {len(v)}" for k, v in splits.items()))
        return splits

    def forecast_inputs(self, path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
        """The batch that forecasts the ``horizon`` rows after each series' last target, from its last
        ``window`` rows, for the table at ``path`` (default: the training table) with the fitted state.

        Returns ``{"batch": (history, lengths, future, static, series), "series_ids": [...], "times": (N, H)
        labels, "history": [(W,) original units per series]}``. The forecast times are the series' future
        rows, or (a net without known-future covariates) the next ``horizon`` steps of its grid.
        """
        import pandas as pd

        owner, w, h = type(self).__name__, self.window, self.horizon
        self._require_fitted(self.scaler)
        histories, futures, statics, index, labels, raw = [], [], [], [], [], []
        for s in self.read_table(path):
            i, target, covariates, static = self.encode(s)
            if len(s.target) < w:
                raise ValueError(f"{owner}: series {s.name!r} has {len(s.target)} targets, fewer than window={w}")
            if len(s.future_times) < h:
                if self.future_covariates:
                    raise ValueError(f"{owner}: series {s.name!r} has {len(s.future_times)} future rows (after its "
                                     f"last target, time {s.times.iloc[-1]}); its known-future covariates "
                                     f"{self.future_covariates} are needed over horizon={h} rows")
                step = s.times.iloc[-1] - s.times.iloc[-2]
                if is_dates(s.times):
                    times = list(pd.date_range(s.times.iloc[-1], periods=h + 1, freq=self.grid_freq)[1:])
                else:
                    times = [s.times.iloc[-1] + step * (k + 1) for k in range(h)]
            else:
                times = list(s.future_times)
            n = len(target)
            covariates = torch.cat([covariates, covariates.new_zeros(n + h - len(covariates), covariates.shape[1])])
            history, _, future, static, _ = self.sample((i, torch.cat([target, target.new_zeros(h)]),
                                                         covariates, static), n)  # fmt: skip
            histories.append(history)
            futures.append(future)
            statics.append(static)
            index.append(i)
            labels.append([time_label(t) for t in times])
            raw.append(s.target[-w:])
        history, lengths = pad_sequences(histories)
        batch = (history, lengths, torch.stack(futures), torch.stack(statics), torch.tensor(index))
        assert self.series_ids is not None
        return {"batch": batch, "series_ids": [self.series_ids[i] for i in index], "times": labels, "history": raw}

    @property
    def net_kwargs(self) -> dict[str, Any]:
        self._require_fitted(self.categories)
        assert self.categories is not None
        return {"input_size": 1 + len(self.past_covariates) + len(self.future_covariates), "horizon": self.horizon,
                "future_size": len(self.future_covariates),
                "static_cardinalities": [len(c) for c in self.categories]}  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        """Plain-data fitted state: series ids, per-series scalers and MASE scales, covariate scaling,
        static categories."""
        self._require_fitted(self.scaler, self.series_ids, self.mase_scale, self.categories)
        assert self.scaler is not None
        return {"series_ids": self.series_ids, "scaler": asdict(self.scaler), "mase_scale": self.mase_scale,
                "covariate_shift": self.covariate_shift, "covariate_scale": self.covariate_scale,
                "categories": self.categories}  # fmt: skip

    def load_fitted_state(self, state_dict: dict[str, Any]) -> None:
        self.series_ids = list(state_dict["series_ids"])
        self.scaler = SeriesScalers(**state_dict["scaler"])
        self.mase_scale = list(state_dict["mase_scale"])
        self.covariate_shift, self.covariate_scale = state_dict["covariate_shift"], state_dict["covariate_scale"]
        self.categories = [list(c) for c in state_dict["categories"]]
