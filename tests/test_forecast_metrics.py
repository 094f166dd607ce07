"""Probabilistic forecast scores: CRPS against closed forms and Monte Carlo, interval coverage and width,
and the task's metrics, PNG plots and metrics.json."""

from __future__ import annotations

import csv
import functools
import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from seqforge.data.forecast_io import write_forecast_csv
from seqforge.data.synthetic import SineForecastDataModule
from seqforge.metrics import (
    gaussian_crps,
    gaussian_interval,
    interval_coverage,
    interval_levels,
    lognormal_crps,
    quantile_crps,
    symmetric_levels,
)
from seqforge.models import Forecaster
from seqforge.tasks import ForecastingTask
from seqforge.train import train
from seqforge.utils.config import compose_config

ADAM = functools.partial(torch.optim.Adam, lr=0.01)
QUIET = ["extras.print_config=false", "callbacks.rich_progress_bar=null", "callbacks.model_summary=null"]


def monte_carlo_crps(samples: torch.Tensor, y: float) -> tuple[float, float]:
    """``E|X - y| - E|X - X'| / 2`` from independent samples, with its standard error."""
    x, x2 = samples.chunk(2)
    terms = (x - y).abs() / 2 + (x2 - y).abs() / 2 - (x - x2).abs() / 2
    return float(terms.mean()), float(terms.std() / math.sqrt(terms.numel()))


def test_gaussian_crps_matches_its_value_at_the_mean_and_monte_carlo():
    # at y = mean: sigma * (2 phi(0) - 1/sqrt(pi)) = sigma * (sqrt(2) - 1) / sqrt(pi)
    std = torch.tensor([0.5, 2.0], dtype=torch.float64)
    at_mean = gaussian_crps(torch.zeros(2, dtype=torch.float64), std, torch.zeros(2, dtype=torch.float64))
    torch.testing.assert_close(at_mean, std * (math.sqrt(2) - 1) / math.sqrt(math.pi), rtol=1e-12, atol=0)
    gen = torch.Generator().manual_seed(0)
    for mean, sigma, y in [(1.0, 2.0, 4.0), (-3.0, 0.3, -3.1), (0.0, 1.0, -2.5)]:
        samples = mean + sigma * torch.randn(400_000, generator=gen, dtype=torch.float64)
        estimate, se = monte_carlo_crps(samples, y)
        exact = float(gaussian_crps(*(torch.tensor([v], dtype=torch.float64) for v in (mean, sigma, y))))
        assert abs(exact - estimate) < 4 * se, (mean, sigma, y, exact, estimate, se)


def test_lognormal_crps_matches_monte_carlo():
    gen = torch.Generator().manual_seed(1)
    for mu, sigma, y in [(0.0, 0.5, 1.3), (5.0, 0.1, 120.0), (1.0, 1.0, 0.2)]:
        samples = torch.exp(mu + sigma * torch.randn(400_000, generator=gen, dtype=torch.float64))
        estimate, se = monte_carlo_crps(samples, y)
        exact = float(lognormal_crps(*(torch.tensor([v], dtype=torch.float64) for v in (mu, sigma, y))))
        assert abs(exact - estimate) < 4 * se, (mu, sigma, y, exact, estimate, se)


def test_quantile_crps_approaches_the_gaussian_closed_form_as_the_levels_fill_the_unit_interval():
    mean, std = torch.tensor([1.0, -2.0], dtype=torch.float64), torch.tensor([0.5, 3.0], dtype=torch.float64)
    y = torch.tensor([1.7, 0.0], dtype=torch.float64)
    exact = gaussian_crps(mean, std, y)
    errors = []
    for n in (9, 99, 999):
        levels = (torch.arange(n, dtype=torch.float64) + 0.5) / n  # midpoints of n equal bins
        normal = torch.distributions.Normal(mean.unsqueeze(-1), std.unsqueeze(-1))
        errors.append(float((quantile_crps(normal.icdf(levels), y, levels) - exact).abs().max()))
    assert errors[2] < 2e-3 * float(exact.min())  # the Riemann sum converges to the integral
    assert errors[0] > errors[1] > errors[2]


def test_coverage_and_width_of_known_intervals():
    lower, upper = torch.zeros(5), torch.ones(5)
    target = torch.tensor([-0.1, 0.0, 0.5, 1.0, 1.1])
    assert interval_coverage(lower, upper, target).tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]  # closed interval
    gen = torch.Generator().manual_seed(2)
    draws = 3.0 + 2.0 * torch.randn(100_000, generator=gen, dtype=torch.float64)
    mean, std = torch.full_like(draws, 3.0), torch.full_like(draws, 2.0)
    for level, z in [(0.8, 1.2815515655446004), (0.95, 1.959963984540054)]:
        lo, hi = gaussian_interval(mean, std, level)
        torch.testing.assert_close(hi - lo, torch.full_like(draws, 2 * 2.0 * z), rtol=1e-9, atol=0)
        share = float(interval_coverage(lo, hi, draws).mean())
        assert abs(share - level) < 4 * math.sqrt(level * (1 - level) / draws.numel())
        # a forecast twice too wide covers P(|Z| <= 2z) of the draws, not the nominal level
        lo2, hi2 = gaussian_interval(mean, 2 * std, level)
        wide = 2 * float(torch.distributions.Normal(0.0, 1.0).cdf(torch.tensor(2 * z))) - 1
        assert abs(float(interval_coverage(lo2, hi2, draws).mean()) - wide) < 4 * math.sqrt(wide * (1 - wide) / 1e5)


def test_interval_levels_name_the_missing_quantile():
    assert symmetric_levels((0.025, 0.1, 0.5, 0.9, 0.975)) == (0.8, 0.95)
    assert interval_levels("T", (0.025, 0.1, 0.5, 0.9, 0.975), (0.8, 0.95)) == {0.8: (1, 3), 0.95: (0, 4)}
    with pytest.raises(ValueError, match=r"95% interval needs the 0.025 quantile"):
        interval_levels("T", (0.1, 0.5, 0.9), (0.95,))
    net = Forecaster(horizon=2, rnn={"hidden_size": 4}, head="quantile")
    with pytest.raises(ValueError, match=r"ForecastingTask: the 95% interval"):
        ForecastingTask(net, intervals=[0.95])
    with pytest.raises(ValueError, match=r"intervals=\[0.8\] need a probabilistic head"):
        ForecastingTask(Forecaster(horizon=2, rnn={"hidden_size": 4}), intervals=[0.8])
    with pytest.raises(ValueError, match=r"interval levels must be in \(0, 1\), got 1.5"):
        ForecastingTask(Forecaster(horizon=2, rnn={"hidden_size": 4}, head="gaussian"), intervals=[1.5])


def _fit(task: ForecastingTask, dm: SineForecastDataModule, root: Path, logger: bool) -> L.Trainer:
    trainer = L.Trainer(
        accelerator="cpu", max_steps=20, logger=CSVLogger(root) if logger else False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=root,
    )  # fmt: skip
    trainer.fit(task, datamodule=dm)
    return trainer


def test_gaussian_task_scores_are_the_closed_form_in_original_units(tmp_path):
    dm = SineForecastDataModule(window=12, horizon=3, length=300)
    dm.setup()
    torch.manual_seed(0)
    task = ForecastingTask(Forecaster(**dm.net_kwargs, rnn={"hidden_size": 8, "cell": "gru"}, head="gaussian"), ADAM)
    trainer = _fit(task, dm, tmp_path, logger=False)
    metrics = trainer.validate(task, datamodule=dm, verbose=False)[0]
    history = torch.stack([h for h, _ in dm.splits["val"]])
    target = dm.scaler.inverse_transform(torch.stack([t for _, t in dm.splits["val"]]))
    with torch.no_grad():
        out = task.net.eval()(history)
    mean, std = dm.scaler.inverse_transform(out[..., 0]), out[..., 1].sqrt() * dm.scaler.scale
    assert metrics["val/crps"] == pytest.approx(float(gaussian_crps(mean, std, target).mean()), rel=1e-4)
    for level, name in [(0.8, "80"), (0.95, "95")]:
        lo, hi = gaussian_interval(mean, std, level)
        assert metrics[f"val/coverage_{name}"] == pytest.approx(float(interval_coverage(lo, hi, target).mean()))
        assert metrics[f"val/width_{name}"] == pytest.approx(float((hi - lo).mean()), rel=1e-4)
    assert not (tmp_path / "plots").exists()  # no logger: pictures nowhere


def test_quantile_task_logs_crps_and_the_80_interval_and_saves_plots(tmp_path):
    dm = SineForecastDataModule(window=12, horizon=3, length=300)
    torch.manual_seed(0)
    dm.setup()
    task = ForecastingTask(Forecaster(**dm.net_kwargs, rnn={"hidden_size": 8}, head="quantile"), ADAM, num_plots=2)
    trainer = _fit(task, dm, tmp_path, logger=True)
    tested = trainer.test(task, datamodule=dm, verbose=False)[0]
    assert {"test/crps", "test/coverage_80", "test/width_80"} <= set(tested)
    assert not any("95" in key for key in tested)  # (0.1, 0.5, 0.9) holds no 95% interval
    assert 0 <= tested["test/coverage_80"] <= 1 and tested["test/width_80"] > 0 and tested["test/crps"] > 0
    pngs = sorted(p.name for p in (tmp_path / "plots").glob("*.png"))
    assert pngs == ["test_forecast_0.png", "test_forecast_1.png", "val_forecast_0.png", "val_forecast_1.png"]
    assert all((tmp_path / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for name in pngs)


def test_probabilistic_scores_reach_metrics_json(tmp_path):
    overrides = ["+experiment=sine_forecast", "debug=fdr", *QUIET, "model.net.head=gaussian", "logger=csv"]
    metrics = train(compose_config("train", overrides, tmp_path))
    written = json.loads((tmp_path / "metrics.json").read_text())
    for stage in ("val", "test"):
        for name in ("crps", "coverage_80", "width_80", "coverage_95", "width_95"):
            key = f"{stage}/{name}"
            assert math.isfinite(written[key]) and written[key] == metrics[key]
    assert (tmp_path / "plots" / "test_forecast_0.png").is_file()


def test_forecast_csv_holds_the_forecast_and_its_intervals_in_original_units(tmp_path):
    dm = SineForecastDataModule(window=12, horizon=3, length=300)
    dm.setup()
    torch.manual_seed(0)
    task = ForecastingTask(Forecaster(**dm.net_kwargs, rnn={"hidden_size": 8}, head="gaussian")).eval()
    task.datamodule = dm  # what load_from_checkpoint attaches
    history = torch.stack([h for h, _ in dm.splits["test"][:2]])
    forecast = task.forecast(history)
    path = tmp_path / "forecast.csv"
    write_forecast_csv(path, **forecast, series=["a", "b"])
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["series", "step", "prediction", "lower_80", "upper_80", "lower_95", "upper_95"]
    assert [(r["series"], r["step"]) for r in rows] == [(s, str(k)) for s in "ab" for k in (1, 2, 3)]
    with torch.no_grad():
        out = task.net(history)
    mean = dm.scaler.inverse_transform(out[..., 0]).flatten()
    half95 = 1.959964 * out[..., 1].sqrt().flatten() * dm.scaler.scale
    for row, m, h in zip(rows, mean.tolist(), half95.tolist()):
        assert float(row["prediction"]) == pytest.approx(m, rel=1e-5)
        assert float(row["lower_95"]) == pytest.approx(m - h, rel=1e-5)
        assert float(row["lower_95"]) < float(row["lower_80"]) < float(row["prediction"]) < float(row["upper_80"])
    write_forecast_csv(path, [1.0, 2.0], times=["1960-01", "1960-02"])
    assert path.read_text().splitlines() == ["series,step,time,prediction", "0,1,1960-01,1", "0,2,1960-02,2"]
    with pytest.raises(ValueError, match=r"times must have prediction's shape \(1, 2\)"):
        write_forecast_csv(path, [1.0, 2.0], times=["1960-01"])
    with pytest.raises(ValueError, match=r"series has 1 names for 2 forecasts"):
        write_forecast_csv(path, [[1.0], [2.0]], series=["a"])
    with pytest.raises(ValueError, match=r"80% interval bounds must have prediction's shape"):
        write_forecast_csv(path, [1.0, 2.0], intervals={0.8: ([0.0], [3.0])})
