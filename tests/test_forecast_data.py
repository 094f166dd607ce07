"""Bad input for forecasting series: timestamps, NaN values, too short and constant series."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import numpy as np
import pytest

from seqforge.data import SeriesDataModule
from seqforge.models import Forecaster
from seqforge.tasks import ForecastingTask


def write(path: Path, times: list[str], values: list[float] | None = None) -> Path:
    values = values if values is not None else [float(i % 5 + i) for i in range(len(times))]
    path.write_text("month,value\n" + "".join(f"{t},{v}\n" for t, v in zip(times, values)))
    return path


def months(n: int, start: int = 1949) -> list[str]:
    return [f"{start + i // 12}-{i % 12 + 1:02d}-01" for i in range(n)]


KW = {"column": "value", "time_column": "month", "window": 4, "test_size": 4, "val_size": 4}


def test_regular_timestamps_pass_and_give_the_same_windows(tmp_path):
    with_times = SeriesDataModule(path=write(tmp_path / "m.csv", months(40)), **KW)
    with_times.setup()
    numbers = SeriesDataModule(path=write(tmp_path / "n.csv", [str(1700 + 2 * i) for i in range(40)]), **KW)
    numbers.setup()
    np.testing.assert_array_equal(with_times.series, numbers.series)
    explicit = SeriesDataModule(path=write(tmp_path / "f.csv", months(40)), freq="MS", **KW)
    explicit.setup()
    assert len(explicit.splits["test"]) == 4


@pytest.mark.parametrize(
    ("times", "message"),
    [
        (months(20) + months(20, 1949), r"duplicated timestamp '1949-01-01' in 'month' at lines 2 and 22"),
        (months(10) + months(30)[11:], r"missing timestamps at step 'MS', first: \['1949-11-01'\]"),
        (months(10)[::-1] + months(30, 1960), r"must increase; line 3 \('1949-09-01'\) comes after line 2"),
        (months(10) + ["1949-11-15"] + months(29)[11:], r"line 12: timestamp '1949-11-15' .* off the 'MS' grid"),
        (months(10) + ["soon"] + months(29)[11:], r"time column 'month' holds a value that is neither"),
        ([str(i) for i in range(10)] + [str(i) for i in range(12, 42)],
         r"missing timestamps at step '1', first: \['10'\]"),
        ([str(i) for i in range(10)] + ["10.5"] + [str(i) for i in range(11, 40)],
         r"line 12: time '10.5'.*off the step 1"),
    ],
)
def test_bad_timestamps_are_errors_naming_the_lines(tmp_path, times, message):
    path = write(tmp_path / "bad.csv", times)
    with pytest.raises(ValueError, match=message) as err:
        SeriesDataModule(path=path, **KW).setup()
    assert "bad.csv" in str(err.value)


def test_time_column_without_a_file_is_refused():
    with pytest.raises(ValueError, match=r"time_column= and freq= describe a CSV file \(path=\)"):
        SeriesDataModule(source="lynx", time_column="year")


class Generated(SeriesDataModule):
    def __init__(self, values: np.ndarray, **kwargs) -> None:
        super().__init__(**kwargs)
        self.values = values

    def load_series(self) -> np.ndarray:
        return self.values


def test_nan_values_in_a_generated_series_are_an_error_naming_the_index():
    values = np.arange(40, dtype=np.float64)
    values[17] = np.nan
    with pytest.raises(ValueError, match=r"1 NaN or infinite values, the first at index 17 \(nan\); fill or cut"):
        Generated(values, window=4, test_size=4, val_size=4).setup()


def test_a_series_shorter_than_history_and_horizon_names_both():
    with pytest.raises(ValueError, match=r"the series has 20 points; window=10 \+ horizon=3 need at least 13 training "
                                         r"points before val_size=4 \+ test_size=4, but only 12 remain"):
        Generated(np.arange(20.0), window=10, horizon=3, test_size=4, val_size=4).setup()


def test_a_constant_series_warns_and_reports_mase_as_nan_not_infinity():
    dm = Generated(np.full(60, 7.0), window=4, horizon=2, test_size=6, val_size=6)
    with pytest.warns(UserWarning, match=r"MASE is undefined: mase_scale=0 and the task reports mase as NaN"):
        dm.setup()
    assert dm.mase_scale == 0.0
    task = ForecastingTask(Forecaster(**dm.net_kwargs, rnn={"hidden_size": 4}))
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    metrics = trainer.validate(task, datamodule=dm, verbose=False)[0]
    assert math.isnan(metrics["val/mase"]) and math.isfinite(metrics["val/mae"])
