"""Classical per-series baselines on the test split of a :class:`seqforge.data.panel.PanelDataModule`.

    python benchmarks/panel_baselines.py [data=us_macro] [--out benchmarks/results/runs/us_macro_baselines.json]

The split, the forecast origins and the MASE scales are the datamodule's own (``configs/data/<data>.yaml``),
so the numbers compare with ``test/*`` of ``scripts/train.py +experiment=<data>``. Every test window of
every series is forecast ``horizon`` steps from the true history before it, by

- ``naive``: the last value; ``seasonal_naive``: the value ``season`` steps earlier (the datamodule's season);
- ``arima``: a per-series ARIMA(p, 0, q) with a constant (statsmodels ``SARIMAX``), (p, q) in 0..2 chosen by
  AIC and fitted on the series' targets before its test block (the net's training and validation rows),
  then run with fixed parameters through each origin's history; its Gaussian forecast gives CRPS and the
  80%/95% intervals.

Metrics as :class:`seqforge.tasks.ForecastingTask` computes them: MAE, RMSE, sMAPE (fraction in [0, 2]),
MASE (each window's MAE over its series' training seasonal-naive MAE, averaged over windows), CRPS,
coverage and mean width of the central 80%/95% intervals.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from seqforge.metrics import gaussian_crps, gaussian_interval

ROOT = Path(__file__).resolve().parents[1]
LEVELS = (0.8, 0.95)


def scores(pred: np.ndarray, target: np.ndarray, mase_scale: np.ndarray, std: np.ndarray | None) -> dict[str, float]:
    """``pred``, ``target``, ``std`` ``(N, H)``; ``mase_scale`` ``(N,)``: the metrics of the module docstring."""
    err = np.abs(pred - target)
    out = {"mae": err.mean(), "rmse": np.sqrt((err**2).mean()),
           "smape": (2 * err / np.maximum(np.abs(pred) + np.abs(target), 1.17e-6)).mean(),
           "mase": (err.mean(axis=1) / mase_scale).mean()}  # fmt: skip
    if std is not None:
        mean, sd, y = (torch.from_numpy(a) for a in (pred, std, target))
        out["crps"] = float(gaussian_crps(mean, sd, y).mean())
        for level in LEVELS:
            lower, upper = (b.numpy() for b in gaussian_interval(mean, sd, level))
            out[f"coverage_{level * 100:g}"] = ((target >= lower) & (target <= upper)).mean()
            out[f"width_{level * 100:g}"] = (upper - lower).mean()
    return {k: float(v) for k, v in out.items()}


def arima(train: np.ndarray, full: np.ndarray, origins: list[int], horizon: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Mean and std ``(len(origins), horizon)`` of the AIC-best ARIMA(p, 0, q) fitted on ``train``, run with
    fixed parameters through ``full[:origin]`` for each origin; and the order chosen."""
    from statsmodels.tsa.statespace.sarimax import SARIMAX  # heavy import, kept local

    best = None
    for p in range(3):
        for q in range(3):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # convergence chatter of the optimizer on some orders
                fit = SARIMAX(train, order=(p, 0, q), trend="c").fit(disp=False)
            if best is None or fit.aic < best.aic:
                best, order = fit, f"({p},0,{q})"
    assert best is not None
    means, stds = [], []
    for t in origins:
        forecast = best.apply(full[:t]).get_forecast(horizon)
        means.append(forecast.predicted_mean)
        stds.append(np.sqrt(forecast.var_pred_mean))
    return np.asarray(means), np.asarray(stds), order


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", default=["data=us_macro"], help="Hydra overrides of the data group")
    parser.add_argument("--out", type=Path, default=None, help="JSON file for the scores (default: print only)")
    args = parser.parse_args()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=[*args.overrides, "model=forecaster"])
    dm = instantiate(cfg.data)
    dm.setup("test")
    h, season = dm.horizon, dm.season
    preds: dict[str, list[np.ndarray]] = {"naive": [], "seasonal_naive": [], "arima": []}
    arima_std, targets, scales, orders = [], [], [], {}
    for i, s in enumerate(dm.series):
        y, n = s.target, len(s.target)
        origins = list(range(n - dm.test_size, n - h + 1))
        targets.append(np.stack([y[t : t + h] for t in origins]))
        scales.append(np.full(len(origins), dm.mase_scale[i]))
        preds["naive"].append(np.stack([np.full(h, y[t - 1]) for t in origins]))
        preds["seasonal_naive"].append(np.stack([y[t - season + np.arange(h) % season] for t in origins]))
        mean, std, orders[s.name] = arima(y[: n - dm.test_size], y, origins, h)
        preds["arima"].append(mean)
        arima_std.append(std)
    target, scale = np.concatenate(targets), np.concatenate(scales)
    results = {name: scores(np.concatenate(p), target, scale, np.concatenate(arima_std) if name == "arima" else None)
               for name, p in preds.items()}  # fmt: skip
    report = {"data": cfg.data.get("source") or cfg.data.get("path"), "test_windows": int(target.shape[0]),
              "arima_orders": orders, "test": results}  # fmt: skip
    text = json.dumps(report, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
