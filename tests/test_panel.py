"""Many series in one long table (PanelDataModule): windows, scalers, static features, bad input, predict CSV."""

from __future__ import annotations

import csv
from functools import partial
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch

from seqforge.checkpoint import load_from_checkpoint
from seqforge.data.panel import PanelDataModule, us_macro
from seqforge.models import Forecaster
from seqforge.predict import predict_from_config
from seqforge.tasks import ForecastingTask
from seqforge.tasks.forecasting import write_panel_forecasts
from seqforge.utils.config import ConfigError, compose_config

W, H, TEST, VAL = 4, 2, 4, 4
KW = {"past_covariates": ["past"], "future_covariates": ["known"], "static_categoricals": ["group"],
      "window": W, "horizon": H, "test_size": TEST, "val_size": VAL}  # fmt: skip


def frame(lengths: dict[str, int] | None = None, start: int = 0) -> pd.DataFrame:
    """Series ``s`` (index k) has target ``100 k + t`` at time ``t``, past covariate ``-(100 k + t)``, known-future
    covariate ``t``: every value tells its series and time."""
    lengths = lengths or {"a": 30, "b": 24, "c": 40}
    rows = []
    for k, (name, n) in enumerate(lengths.items()):
        for t in range(start, start + n):
            rows.append({"series_id": name, "time": t, "target": 100.0 * k + t + 0.5 * (t % 3),
                         "past": -(100.0 * k + t), "known": float(t), "group": "odd" if k % 2 else "even"})  # fmt: skip
    return pd.DataFrame(rows)


def write(df: pd.DataFrame, path: Path) -> Path:
    df.to_csv(path, index=False)
    return path


def module(path: Path, **kwargs: object) -> PanelDataModule:
    dm = PanelDataModule(path=path, **{**KW, **kwargs})
    dm.setup()
    return dm


def test_windows_stay_in_their_series_and_never_see_the_future(tmp_path):
    df = frame()
    dm = module(write(df.sample(frac=1.0, random_state=0), tmp_path / "p.csv"), scaler="none")  # rows shuffled
    assert sorted(dm.series_ids) == ["a", "b", "c"]  # in order of first appearance
    mean, std = np.asarray(dm.covariate_shift), np.asarray(dm.covariate_scale)
    counts = {"train": 0, "val": 0, "test": 0}
    for split, samples in dm.splits.items():
        for history, target, future, static, i in samples:
            name = dm.series_ids[i]
            k = "abc".index(name)
            n = {"a": 30, "b": 24, "c": 40}[name]
            covariates = history[:, 1:].numpy() * std + mean  # (W, 2): past, known
            times = covariates[:, 1]
            target_times = future[:, 0].numpy() * std[1] + mean[1]
            np.testing.assert_allclose(np.diff(times), 1, atol=1e-4)  # W consecutive rows ...
            np.testing.assert_allclose(target_times, times[-1] + 1 + np.arange(H), atol=1e-4)  # ... then the targets
            np.testing.assert_allclose(history[:, 0].numpy(), 100 * k + times + 0.5 * (np.round(times) % 3), atol=1e-3)
            np.testing.assert_allclose(covariates[:, 0], -(100 * k + times), atol=1e-3)  # the row's own series
            np.testing.assert_allclose(target.numpy(), 100 * k + target_times + 0.5 * (np.round(target_times) % 3),
                                       atol=1e-3)  # fmt: skip
            assert static.tolist() == [dm.categories[0].index("odd" if k % 2 else "even")]
            first = round(float(target_times[0]))
            if split == "train":
                assert first + H <= n - TEST - VAL  # training targets end before the validation block
            elif split == "val":
                assert n - TEST - VAL <= first and first + H <= n - TEST
            else:
                assert n - TEST <= first and first + H <= n
            counts[split] += 1
    assert counts == {"train": sum(n - TEST - VAL - W - H + 1 for n in (30, 24, 40)),
                      "val": 3 * (VAL - H + 1), "test": 3 * (TEST - H + 1)}  # fmt: skip


def test_scalers_fit_on_training_rows_only(tmp_path):
    df = frame()
    dm = module(write(df, tmp_path / "p.csv"))
    changed = df.copy()
    late = changed.groupby("series_id").cumcount(ascending=False) < TEST + VAL  # each series' val and test rows
    changed.loc[late, ["target", "past", "known"]] *= 1000
    other = module(write(changed, tmp_path / "q.csv"))
    assert other.scaler == dm.scaler and other.mase_scale == dm.mase_scale
    assert other.covariate_shift == dm.covariate_shift and other.covariate_scale == dm.covariate_scale
    b = df[df.series_id == "b"].target.to_numpy()[: 24 - TEST - VAL]
    i = dm.series_ids.index("b")
    assert dm.scaler.shift[i] == pytest.approx(b.mean()) and dm.scaler.scale[i] == pytest.approx(b.std())
    assert dm.mase_scale[i] == pytest.approx(np.abs(np.diff(b)).mean())
    train_rows = pd.concat([g.iloc[: len(g) - TEST - VAL] for _, g in df.groupby("series_id")])
    assert dm.covariate_shift == pytest.approx(train_rows[["past", "known"]].mean().tolist())
    scaled = dm.splits["train"][0][1]  # series a's first targets, scaled with a's own scaler
    assert torch.allclose(dm.scaler.inverse_transform(scaled[None], torch.tensor([0]))[0],
                          torch.tensor(df.target.to_numpy()[W : W + H], dtype=torch.float32))  # fmt: skip


def small_task(dm: PanelDataModule, **net: object) -> ForecastingTask:
    model = Forecaster(**dm.net_kwargs, rnn={"hidden_size": 8}, **net)  # type: ignore[arg-type]
    return ForecastingTask(model, optimizer=partial(torch.optim.Adam, lr=0.01), num_plots=0)


def trainer(tmp_path: Path, **kwargs: object) -> L.Trainer:
    return L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, default_root_dir=tmp_path, **kwargs)  # fmt: skip


@pytest.mark.parametrize("strategy", ["direct", "autoregressive"])
def test_static_embeddings_and_future_covariates_are_used(tmp_path, strategy):
    dm = module(write(frame(), tmp_path / "p.csv"))
    L.seed_everything(0)
    task = small_task(dm, strategy=strategy, head="gaussian")
    before = task.net.static_embeddings[0].weight.detach().clone()
    trainer(tmp_path, max_epochs=1).fit(task, datamodule=dm)
    assert not torch.equal(task.net.static_embeddings[0].weight, before)  # trained through the loss
    history, lengths, _, future, static, _ = dm.collate_fn(dm.splits["test"][:4])
    task.eval()
    with torch.no_grad():
        out = task.net(history, lengths, future=future, static=static)
        assert not torch.allclose(out, task.net(history, lengths, future=future, static=1 - static))
        assert not torch.allclose(out, task.net(history, lengths, future=future + 1, static=static))
    with pytest.raises(ValueError, match=r"static must be \(B, 1\) int64 ids, got None"):
        task.net(history, lengths, future=future)
    with pytest.raises(ValueError, match=r"future must be \(B, horizon, future_size\) = \(4, 2, 1\), got None"):
        task.net(history, lengths, static=static)


def test_metrics_are_in_each_series_original_units(tmp_path):
    dm = module(write(frame(), tmp_path / "p.csv"), season=2)
    L.seed_everything(0)
    task = small_task(dm, head="quantile", quantiles=(0.1, 0.5, 0.9))
    fit = trainer(tmp_path, max_epochs=2)
    fit.fit(task, datamodule=dm)
    got = fit.test(task, datamodule=dm, verbose=False)[0]
    history, lengths, target, future, static, series = dm.collate_fn(dm.splits["test"])
    result = task.forecast(history, lengths, future=future, static=static, series=series)
    truth = dm.scaler.inverse_transform(target, series).numpy()
    err = np.abs(result["prediction"] - truth)
    assert got["test/mae"] == pytest.approx(err.mean(), rel=1e-4)
    scale = np.asarray(dm.mase_scale)[series.numpy()]
    assert got["test/mase"] == pytest.approx((err.mean(axis=1) / scale).mean(), rel=1e-4)
    lower, upper = result["intervals"][0.8]
    assert got["test/coverage_80"] == pytest.approx(((truth >= lower) & (truth <= upper)).mean(), rel=1e-4)
    # series c's targets are about 200 larger than a's: the forecasts are in original units, per series
    assert abs(result["prediction"][series.numpy() == 2].mean() - truth[series.numpy() == 2].mean()) < 50


def bad(df: pd.DataFrame, **set_: object) -> pd.DataFrame:
    df = df.copy()
    for key, value in set_.items():
        series, time, column = key.split("__")
        df[column] = df[column].astype(object)
        df.loc[(df.series_id == series) & (df.time == int(time)), column] = value
    return df


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: pd.concat([frame(), frame().iloc[[35]]]), r"series 'b': duplicated time 5 in 'time'"),
        (lambda: frame().drop(index=[40]), r"series 'b': missing times in 'time' \(a gap\), first: \['10.0'\]"),
        (lambda: frame({"a": 30, "short": 13}), r"series 'short' has 13 targets; window=4 \+ horizon=2 \+ val_size=4 "
                                                r"\+ test_size=4 need at least 14"),
        (lambda: bad(frame(), b__7__target=np.nan), r"series 'b': column 'target' is NaN at time 7"),
        (lambda: bad(frame(), a__20__known=np.nan),
         r"series 'a': known-future covariate 'known' is missing at time 20"),
        (lambda: bad(frame(), c__3__past=np.nan), r"series 'c': past covariate 'past' is missing at time 3"),
        (lambda: bad(frame(), c__3__past="high"), r"series 'c', column 'past', time 3: 'high' is not a number"),
        (lambda: bad(frame(), a__2__group="odd"), r"series 'a': static column 'group' must hold one value per "
                                                  r"series, got \['even', 'odd'\]"),
        (lambda: frame().assign(target=lambda d: d.target.where(d.series_id != "b", 7.0)),
         r"series 'b' is constant \(7\) over its training part \(times 0 to 15\)"),
        (lambda: frame().drop(columns=["known"]), r"has no column\(s\) \['known'\]"),
        (lambda: frame().assign(series_id=lambda d: d.series_id.where(d.index != 3)),
         r"column 'series_id' is empty in 1 row\(s\), the first at time 3"),
    ],
)
def test_bad_input_is_an_error_naming_series_column_and_time(tmp_path, make, message):
    with pytest.raises(ValueError, match=message):
        module(write(make(), tmp_path / "bad.csv"))


def test_dates_need_a_regular_grid(tmp_path):
    df = frame({"a": 30, "b": 24})
    df["time"] = pd.Timestamp("2000-01-01") + pd.to_timedelta(df.time * 7, unit="D")  # weekly
    module(write(df, tmp_path / "ok.csv"))
    shifted = df.copy()
    shifted.loc[5, "time"] += pd.Timedelta(days=1)
    with pytest.raises(ValueError, match=r"series 'a': time 2000-02-06 .* is off the 'W-SAT' grid"):
        module(write(shifted, tmp_path / "off.csv"))


def future_rows(df: pd.DataFrame, n: int, known: bool = True) -> pd.DataFrame:
    """``n`` rows after each series' end with an empty target and past covariate."""
    extra = []
    for _, rows in df.groupby("series_id", sort=False):
        last = rows.iloc[-1]
        for k in range(1, n + 1):
            extra.append({**last.to_dict(), "time": last.time + k, "target": np.nan, "past": np.nan,
                          "known": float(last.time + k) if known else np.nan})  # fmt: skip
    return pd.concat([df, pd.DataFrame(extra)], ignore_index=True)


def test_predict_writes_a_forecast_csv_and_plots_from_a_checkpoint(tmp_path):
    from seqforge.checkpoint import ConfigInCheckpoint

    path = write(frame(), tmp_path / "p.csv")
    dm = module(path)
    L.seed_everything(0)
    task = small_task(dm, head="gaussian")
    net = {"_target_": "seqforge.models.Forecaster", "rnn": {"hidden_size": 8}, "head": "gaussian"}
    config = {"data": {"_target_": "seqforge.data.panel.PanelDataModule", "path": str(path), **KW},
              "model": {"_target_": "seqforge.tasks.ForecastingTask", "num_plots": 0, "net": net}}  # fmt: skip
    fit = trainer(tmp_path, max_epochs=1, callbacks=[ConfigInCheckpoint(config, dm.net_kwargs)])
    fit.fit(task, datamodule=dm)
    fit.save_checkpoint(tmp_path / "m.ckpt")
    loaded = load_from_checkpoint(tmp_path / "m.ckpt")
    table = write(future_rows(frame(), H), tmp_path / "future.csv")
    result = write_panel_forecasts(loaded, tmp_path / "f.csv", table, plot_folder=tmp_path / "plots", num_plots=2)
    rows = list(csv.DictReader((tmp_path / "f.csv").open()))
    first = [(r["series"], r["step"], r["time"]) for r in rows[:3]]
    assert first == [("a", "1", "30"), ("a", "2", "31"), ("b", "1", "24")]  # the rows after each series' end
    assert len(rows) == 3 * H and {"lower_80", "upper_95"} <= set(rows[0])
    assert all(float(r["lower_95"]) <= float(r["prediction"]) <= float(r["upper_95"]) for r in rows)
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["a.png", "b.png"]
    assert 45 < result["prediction"][1].mean() < 175  # series b (targets about 100 + t) in original units
    cfg = compose_config("predict", [f"ckpt_path={tmp_path / 'm.ckpt'}", f"input_file={table}",
                                     f"output_file={tmp_path / 'out' / 'f.csv'}", "progress=false"])  # fmt: skip
    predict_from_config(cfg)  # scripts/predict.py: the same CSV, plots beside it
    assert (tmp_path / "out" / "f.csv").read_text() == (tmp_path / "f.csv").read_text()
    assert {"a.png", "b.png", "c.png"} == {p.name for p in (tmp_path / "out" / "f_plots").iterdir()}
    with pytest.raises(ConfigError, match=r"a forecaster over many series forecasts a table"):
        predict_from_config(compose_config("predict", [f"ckpt_path={tmp_path / 'm.ckpt'}", f"input_file={table}"]))
    with pytest.raises(ValueError, match=r"series 'a' has 0 future rows .* known-future covariates \['known'\]"):
        write_panel_forecasts(loaded, tmp_path / "g.csv", path)
    unknown = write(future_rows(frame(), H, known=False), tmp_path / "x.csv")
    with pytest.raises(ValueError, match=r"'a': known-future covariate 'known' is missing at time 30 \(a future row"):
        write_panel_forecasts(loaded, tmp_path / "g.csv", unknown)
    with pytest.raises(ValueError, match=r"series 'z' was not among the training series"):
        write_panel_forecasts(loaded, tmp_path / "g.csv", write(future_rows(frame({"z": 30}), H), tmp_path / "z.csv"))


def test_us_macro_source_is_eight_quarterly_growth_rates():
    df = us_macro()
    assert sorted(df.series_id.unique()) == sorted(["realgdp", "realcons", "realinv", "realgovt", "realdpi", "cpi",
                                                    "m1", "pop"])  # fmt: skip
    gdp = df[df.series_id == "realgdp"]
    assert len(gdp) == 202 and str(gdp.time.iloc[0].date()) == "1959-04-01"
    assert gdp.target.iloc[0] == pytest.approx(100 * np.log(2778.801 / 2710.349))  # macrodata's first two quarters
