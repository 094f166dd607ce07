"""Classical anomaly-detection baselines on the split the anomaly experiments use (the RESULTS.md rows).

    python benchmarks/anomaly_baselines.py   # yahoo and mitdb; writes benchmarks/results/anomaly_baselines.json

For each series, the split, window and threshold rule of ``configs/data/anomaly_<name>.yaml`` and the
experiment (best validation F1 for yahoo; for mitdb, whose validation part holds no anomaly, just above the
largest validation score, ``quantile=1.0``), and the same test metrics as ``AnomalyTask``:

- rolling z-score (:func:`seqforge.tasks.anomaly.rolling_zscore`) over the previous ``window`` points;
- isolation forest (scikit-learn, 200 trees, seed 0) fitted on the training windows without a labelled
  anomaly, each window minus its mean (as the experiments' ``window_norm: mean``); a window's score is
  ``-score_samples``, a point's score the mean over the windows covering it
  (:func:`seqforge.tasks.anomaly.window_scores`, as the autoencoder's);
- mitdb only, a published detection: CAPA (``sktime.detection.capa.CAPA(max_segment_length=350)``, fitted
  on the whole series without labels) flags the interval [7084, 7425] in sktime's example notebook
  ``examples/07_detection_anomaly_changepoints.ipynb`` (the output committed with sktime PR #7284); here it
  is scored on our test part. No published figure for the yahoo series was found.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf
from sklearn.ensemble import IsolationForest

from seqforge.data.anomaly import AnomalyDataModule
from seqforge.tasks.anomaly import detect, evaluate, rolling_zscore, window_scores

ROOT = Path(__file__).resolve().parents[1]
QUANTILE = {"yahoo": None, "mitdb": 1.0}  # the experiments' model.quantile
CAPA_INTERVAL = (7084, 7425)  # closed interval, sktime notebook 07 output on mitdb


def datamodule(name: str) -> AnomalyDataModule:
    cfg = OmegaConf.to_container(OmegaConf.load(ROOT / "configs" / "data" / f"anomaly_{name}.yaml"))
    assert isinstance(cfg, dict)
    kwargs = {k: v for k, v in cfg.items() if k not in ("_target_", "data_dir")}
    dm = AnomalyDataModule(**kwargs)
    dm.setup()
    return dm


def isolation_forest_scores(dm: AnomalyDataModule, seed: int = 0) -> np.ndarray:
    assert dm.series is not None and dm.labels is not None and dm.scaler is not None
    x, w = dm.scaler.transform(dm.series), dm.window
    windows = np.lib.stride_tricks.sliding_window_view(x, w)  # (T - w + 1, w): window i covers [i, i + w)
    windows = windows - windows.mean(axis=1, keepdims=True)
    starts = np.arange(len(windows))
    anomalous = np.lib.stride_tricks.sliding_window_view(dm.labels, w).any(axis=1)
    train = (starts + w <= dm.val_start) & ~anomalous
    forest = IsolationForest(n_estimators=200, random_state=seed).fit(windows[train])
    window_score = -forest.score_samples(windows)  # (T - w + 1,): higher = more anomalous
    positions = starts[:, None] + np.arange(w)  # (T - w + 1, w)
    return window_scores(np.repeat(window_score[:, None], w, axis=1), positions, len(x))


def baselines(name: str) -> dict[str, dict[str, float]]:
    dm = datamodule(name)
    assert dm.series is not None and dm.labels is not None
    val, test, quantile = dm.parts["val"], dm.parts["test"], QUANTILE[name]
    out: dict[str, dict[str, Any]] = {
        f"rolling z-score (window {dm.window})": detect(rolling_zscore(dm.series, dm.window), dm.labels, val, test,
                                                        quantile),  # fmt: skip
        "isolation forest": detect(isolation_forest_scores(dm), dm.labels, val, test, quantile),
    }
    if name == "mitdb":
        flags = np.zeros(len(dm.series))
        flags[CAPA_INTERVAL[0] : CAPA_INTERVAL[1] + 1] = 1.0
        scored = evaluate(flags[test], dm.labels[test], threshold=1.0)  # the published flags, no threshold chosen
        out["CAPA, published interval (sktime notebook 07)"] = {f"test/{k}": v for k, v in scored.items()}
    return out


def main() -> None:
    results = {name: baselines(name) for name in QUANTILE}
    for name, rows in results.items():
        for method, metrics in rows.items():
            print(f"{name:6s} {method:48s} point P/R/F1 {metrics['test/point_precision']:.3f} "
                  f"{metrics['test/point_recall']:.3f} {metrics['test/point_f1']:.3f}   event P/R/F1 "
                  f"{metrics['test/event_precision']:.3f} {metrics['test/event_recall']:.3f} "
                  f"{metrics['test/event_f1']:.3f}")
    path = ROOT / "benchmarks" / "results" / "anomaly_baselines.json"
    path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
