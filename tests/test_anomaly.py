"""Anomaly detection: point- and event-wise scores, a threshold chosen without test labels, baselines."""

from __future__ import annotations

import doctest
import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from seqforge.checkpoint import load_from_checkpoint
from seqforge.data.anomaly import AnomalyDataModule
from seqforge.data.series import labelled_series
from seqforge.models import Forecaster, RecurrentAutoencoder
from seqforge.models import autoencoder as autoencoder_module
from seqforge.tasks import AnomalyTask
from seqforge.tasks.anomaly import (
    choose_threshold,
    detect,
    evaluate,
    event_scores,
    events,
    point_scores,
    quantile_threshold,
    residual_scores,
    rolling_zscore,
    window_scores,
)
from seqforge.utils.config import CONFIG_DIR

REPO = CONFIG_DIR.parent


def test_point_and_event_scores_on_a_hand_case():
    labels = np.array([0, 1, 1, 1, 0, 0, 0, 1, 0, 0], dtype=bool)  # events [1, 4) and [7, 8)
    flags = np.array([0, 0, 1, 0, 0, 1, 1, 0, 0, 0], dtype=bool)  # runs [2, 3) (hit) and [5, 7) (false)
    assert events(labels) == [(1, 4), (7, 8)] and events(flags) == [(2, 3), (5, 7)]
    assert point_scores(flags, labels) == pytest.approx({"precision": 1 / 3, "recall": 1 / 4, "f1": 2 / 7})
    assert event_scores(flags, labels) == pytest.approx({"precision": 1 / 2, "recall": 1 / 2, "f1": 1 / 2})
    assert point_scores(np.zeros(10, bool), labels) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    with pytest.raises(ValueError, match=r"must be 1-D of one length, got \(3,\) and \(10,\)"):
        point_scores(flags[:3], labels)


def test_threshold_is_the_best_validation_f1_and_ignores_test_labels():
    rng = np.random.default_rng(0)
    scores = rng.random(400)
    labels = np.zeros(400, dtype=bool)
    labels[[50, 120, 300, 350]] = True
    scores[labels] += 1.0  # anomalies score above every normal point
    val, test = slice(0, 200), slice(200, 400)
    threshold = choose_threshold(scores[val], labels[val])
    assert point_scores(scores[val] >= threshold, labels[val])["f1"] == 1.0
    result = detect(scores, labels, val, test)
    assert result["threshold"] == threshold and result["test/point_f1"] == 1.0
    shuffled = labels.copy()
    shuffled[test] = rng.permutation(labels[test])  # other test labels: same threshold, other test scores
    other = detect(scores, shuffled, val, test)
    assert other["threshold"] == threshold and other["test/point_f1"] < 1.0
    with pytest.raises(ValueError, match="validation labels hold no anomaly"):
        choose_threshold(scores[:40], labels[:40])


def test_rolling_zscore_uses_the_past_only():
    x = np.sin(np.arange(100) / 3.0)
    base = rolling_zscore(x, 10)
    assert np.all(np.isneginf(base[:10]))
    bumped = x.copy()
    bumped[60] += 5.0
    z = rolling_zscore(bumped, 10)
    np.testing.assert_array_equal(z[:60], base[:60])  # a later spike changes no earlier score
    assert int(np.argmax(z)) == 60
    past = x[50:60]
    assert base[60] == pytest.approx(abs(x[60] - past.mean()) / past.std())
    with pytest.raises(ValueError, match=r"window must be in \[2, 99\] for a series of 100, got 1"):
        rolling_zscore(x, 1)
    np.testing.assert_array_equal(residual_scores([1.0, 2.0], [0.5, 4.0]), [0.5, 2.0])


def test_yahoo_labelled_series_loads_offline_and_the_zscore_baseline_finds_its_test_anomalies():
    values, labels = labelled_series("yahoo")
    assert values.shape == labels.shape == (1000,) and int(labels.sum()) == 7
    result = detect(rolling_zscore(values, 20), labels, slice(400, 700), slice(700, 1000))
    # 4 anomalies in validation, 3 in test; the threshold comes from validation alone
    assert result["test/event_recall"] == 1.0 and result["test/point_precision"] == 1.0
    with pytest.raises(ValueError, match="name must be 'yahoo' or 'mitdb'"):
        labelled_series("nab")


# --- functions on hand-computed cases -----------------------------------------------------------------------------
def test_event_scores_on_more_hand_cases():
    labels = np.array([1, 1, 0, 0, 1, 1, 0, 0, 0, 1], dtype=bool)  # events [0, 2), [4, 6), [9, 10): edges included
    one_run = np.array([0, 1, 1, 1, 1, 0, 0, 0, 0, 0], dtype=bool)  # one flagged run touching two events
    assert event_scores(one_run, labels) == pytest.approx({"precision": 1.0, "recall": 2 / 3, "f1": 0.8})
    last_only = np.zeros(10, dtype=bool)
    last_only[9] = True  # the event at the very end of the series
    assert event_scores(last_only, labels) == pytest.approx({"precision": 1.0, "recall": 1 / 3, "f1": 0.5})
    misses = np.array([0, 0, 1, 0, 0, 0, 1, 1, 0, 0], dtype=bool)  # two runs, each next to an event, not on it
    assert event_scores(misses, labels) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    scores = np.array([0.9, 0.2, 0.1, 0.1, 0.8, 0.3, 0.1, 0.1, 0.1, 0.95])
    assert evaluate(scores, labels, threshold=0.8) == pytest.approx({  # flags at 0, 4, 9: three runs, all on events
        "point_precision": 1.0, "point_recall": 3 / 5, "point_f1": 0.75,  # 3 of the 5 labelled points
        "event_precision": 1.0, "event_recall": 1.0, "event_f1": 1.0,
    })  # fmt: skip


def test_window_scores_average_each_point_over_the_windows_covering_it():
    errors = np.array([[1.0, 2.0, 3.0], [5.0, 6.0, 7.0]])  # windows over points 0-2 and 1-3
    positions = np.array([[0, 1, 2], [1, 2, 3]])
    np.testing.assert_allclose(window_scores(errors, positions, 5), [1.0, 3.5, 4.5, 7.0, np.nan])
    with pytest.raises(ValueError, match=r"errors \(2, 3\) and positions \(2, 2\) must match"):
        window_scores(errors, positions[:, :2], 5)


def test_quantile_threshold_reads_scores_only_and_flags_above_the_quantile():
    scores = np.arange(10.0)
    threshold = quantile_threshold(scores, 1.0)
    assert threshold > 9.0 and not (scores >= threshold).any()  # no validation point flagged
    assert (scores >= quantile_threshold(scores, 0.5)).sum() == 5  # above the median 4.5
    labels = np.zeros(20, dtype=bool)
    labels[15] = True
    both = np.concatenate([scores, scores + [0, 0, 0, 0, 0, 50, 0, 0, 0, 0]])
    result = detect(both, labels, slice(0, 10), slice(10, 20), quantile=1.0)  # validation holds no anomaly
    assert result["threshold"] == threshold and result["test/point_f1"] == 1.0
    with pytest.raises(ValueError, match=r"quantile must be in \(0, 1\], got 0"):
        quantile_threshold(scores, 0)


def test_bad_scores_and_labels_are_errors_naming_them():
    scores, labels = np.zeros(10), np.zeros(10, dtype=bool)
    labels[3] = True
    with pytest.raises(ValueError, match=r"detect: scores and labels must be 1-D of one length, got scores \(10,\) "
                                         r"and labels \(9,\)"):  # fmt: skip
        detect(scores, labels[:9], slice(0, 5), slice(5, 9))
    scores[7] = np.nan
    with pytest.raises(ValueError, match="detect: scores holds 1 NaN values, the first at index 7"):
        detect(scores, labels, slice(0, 5), slice(5, 10))


# --- the datamodule ----------------------------------------------------------------------------------------------
def spiky_series(n: int = 240, spikes: tuple[int, ...] = (130, 170, 200, 225)) -> tuple[np.ndarray, np.ndarray]:
    """A sine (period 12) with spikes at ``spikes``: ``(values (n,), labels (n,) bool)``."""
    values = np.sin(2 * np.pi * np.arange(n) / 12)
    labels = np.zeros(n, dtype=bool)
    values[list(spikes)] += 4.0
    labels[list(spikes)] = True
    return values, labels


def test_datamodule_windows_split_scaler_and_written_split(tmp_path: Path):
    values, labels = spiky_series()
    labels[40] = True  # an anomaly in the training part: the windows over it are dropped
    dm = AnomalyDataModule(values=values, labels=labels, val_start=120, test_start=180, window=8,
                           data_dir=tmp_path)  # fmt: skip
    dm.setup()
    train_ends = [int(i) for _, i in dm.splits["train"]]
    assert train_ends == [t for t in range(7, 120) if not 40 <= t <= 47]  # no window holds index 40
    assert [int(i) for _, i in dm.splits["val"]] == list(range(120, 180))
    assert [int(i) for _, i in dm.splits["test"]] == list(range(180, 240))
    window, index = dm.splits["test"][0]
    assert window.shape == (8, 1) and int(index) == 180
    np.testing.assert_allclose(window[:, 0].numpy(), dm.scaler.transform(values[173:181]), rtol=1e-6)  # ends at 180
    train_part = values[:120]
    assert dm.scaler.shift == pytest.approx(train_part.mean()) and dm.scaler.scale == pytest.approx(train_part.std())
    x, lengths, idx = next(iter(dm.test_dataloader()))
    assert x.shape == (60, 8, 1) and lengths.tolist() == [8] * 60 and idx[:3].tolist() == [180, 181, 182]
    rows = (tmp_path / "anomaly" / "series_split.csv").read_text().splitlines()
    assert rows[0] == "index,value,label,part" and len(rows) == 241
    assert rows[41].split(",")[2:] == ["1", "train"] and rows[121].endswith(",0,val") and rows[-1].endswith(",test")


def test_shipped_series_load_and_keep_their_labels():
    dm = AnomalyDataModule(source="mitdb", val_start=4500, test_start=6500, window=64, train_stride=4)
    dm.setup()
    assert dm.labels is not None and int(dm.labels.sum()) == 352 and events(dm.labels) == [(6936, 7288)]
    assert len(dm.splits["test"]) == 1000 and not dm.labels[dm.parts["val"]].any()


def test_bad_data_is_an_error_naming_the_parameter(tmp_path: Path):
    values, labels = spiky_series()
    bad = values.copy()
    bad[17] = np.nan
    cases = [
        (dict(values=bad, labels=labels), "values holds 1 NaN or infinite values, the first at index 17"),
        (dict(values=values, labels=labels[:-1]), "labels must hold one label per point: the series has 240 "
                                                  "points, labels has 239"),
        (dict(values=values, labels=labels * 2), r"labels must be 0 or 1, got 2.0 at index 130"),
        (dict(values=values, labels=labels, window=200), r"the training part \(val_start=120 points\) is shorter "
                                                         r"than window=200"),
        (dict(values=values[:150], labels=labels[:150], test_start=180), "test_start=180 leaves no test part in a "
                                                                        "series of 150 points"),
    ]  # fmt: skip
    for kwargs, message in cases:
        dm = AnomalyDataModule(**{"val_start": 120, "test_start": 180, "window": 8, **kwargs})
        with pytest.raises(ValueError, match=message):
            dm.setup()
    with pytest.raises(ValueError, match="pass exactly one of source=, path= or values="):
        AnomalyDataModule(source="yahoo", values=values, labels=labels)
    with pytest.raises(ValueError, match="values= and labels= go together, got only values="):
        AnomalyDataModule(values=values)
    with pytest.raises(ValueError, match=r"test_start=100 must come after val_start=120"):
        AnomalyDataModule(source="yahoo", val_start=120, test_start=100)
    csv_file = tmp_path / "s.csv"
    csv_file.write_text("data,label\n1.0,0\n,0\n2.0,1\n")
    with pytest.raises(ValueError, match=r"line 3: data='' is missing or not a finite number"):
        AnomalyDataModule(path=csv_file, val_start=1, test_start=2, window=2).setup()


# --- the autoencoder ---------------------------------------------------------------------------------------------
def test_autoencoder_reconstructs_the_window_shape_zero_past_lengths_and_follows_the_level():
    torch.manual_seed(0)
    net = RecurrentAutoencoder(input_size=2, rnn={"hidden_size": 8, "cell": "gru"}, window_norm="mean").eval()
    x = torch.randn(3, 10, 2)
    lengths = torch.tensor([10, 6, 3])
    out = net(x, lengths)
    assert out.shape == (3, 10, 2)
    assert torch.all(out[1, 6:] == 0) and torch.all(out[2, 3:] == 0)
    np.testing.assert_allclose(net(x[1:2, :6])[0].detach().numpy(), out[1, :6].detach().numpy(), atol=1e-6)
    shifted = net(x + 5.0, lengths)  # window_norm="mean": a constant shift moves the reconstruction with it
    np.testing.assert_allclose((shifted - out)[0].detach().numpy(), np.full((10, 2), 5.0), atol=1e-5)
    with pytest.raises(ValueError, match="window_norm must be one of"):
        RecurrentAutoencoder(window_norm="last")
    with pytest.raises(TypeError, match="RecurrentAutoencoder: rnn has no key 'hiden_size'; did you mean"):
        RecurrentAutoencoder(rnn={"hiden_size": 8})
    result = doctest.testmod(autoencoder_module)
    assert result.attempted > 0 and result.failed == 0


# --- the task ----------------------------------------------------------------------------------------------------
def fit_on(labels: np.ndarray, tmp_path: Path, score: str = "reconstruction") -> tuple[AnomalyTask, dict[str, float]]:
    """Two seeded epochs of a small task on :func:`spiky_series` with ``labels``: the task and its test metrics."""
    values, _ = spiky_series()
    L.seed_everything(0)
    dm = AnomalyDataModule(values=values, labels=labels, val_start=120, test_start=180, window=12, batch_size=16)
    if score == "residual":
        net: torch.nn.Module = Forecaster(horizon=1, rnn={"hidden_size": 8})
    else:
        net = RecurrentAutoencoder(rnn={"hidden_size": 8})
    task = AnomalyTask(net, optimizer=partial(torch.optim.Adam, lr=1e-2), score=score)
    trainer = L.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(task, datamodule=dm)
    (metrics,) = trainer.test(task, datamodule=dm, verbose=False)
    return task, metrics


@pytest.mark.parametrize("score", ["reconstruction", "residual"])
def test_threshold_of_a_real_fit_does_not_change_with_the_test_labels(score: str, tmp_path: Path):
    _, labels = spiky_series()
    task, metrics = fit_on(labels, tmp_path, score)
    other = labels.copy()
    other[180:] = False
    other[[185, 190, 195]] = True  # other test labels (the series is the same)
    task_other, metrics_other = fit_on(other, tmp_path, score)
    assert float(task.threshold) == float(task_other.threshold) == metrics["test/threshold"]
    assert np.isfinite(metrics["test/threshold"]) and metrics["test/points"] == 60.0
    for fitted, test_labels, got in ((task, labels, metrics), (task_other, other, metrics_other)):
        part = fitted.part_scores("test")  # the same scores, judged against each run's own test labels
        expected = evaluate(part["scores"], test_labels[180:], float(fitted.threshold))
        assert {k: got[f"test/{k}"] for k in expected} == pytest.approx(expected)
    changed_val = labels.copy()
    changed_val[130] = False  # changing a validation label may change the threshold: it is chosen there
    changed_val[140] = True
    task_val, _ = fit_on(changed_val, tmp_path, score)
    assert float(task_val.threshold) != float(task.threshold)


def test_task_refuses_a_net_that_does_not_fit_its_score():
    with pytest.raises(ValueError, match=r"score='residual' needs a one-step point forecaster .* got Forecaster "
                                         r"with horizon=3, head='point'"):  # fmt: skip
        AnomalyTask(Forecaster(horizon=3, rnn={"hidden_size": 4}), score="residual")
    with pytest.raises(ValueError, match="score must be one of"):
        AnomalyTask(RecurrentAutoencoder(rnn={"hidden_size": 4}), score="forecast")
    with pytest.raises(ValueError, match=r"quantile must be in \(0, 1\], got 1.5"):
        AnomalyTask(RecurrentAutoencoder(rnn={"hidden_size": 4}), quantile=1.5)


@pytest.mark.slow
def test_train_script_writes_metrics_score_plots_and_the_split(tmp_path: Path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SEQFORGE_LOG_DIR": str(tmp_path / "logs"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}  # fmt: skip
    args = [sys.executable, str(REPO / "scripts" / "train.py"), "+experiment=anomaly_yahoo_residual",
            "trainer.max_epochs=3", f"paths.data_dir={tmp_path / 'data'}", "extras.print_config=false",
            "callbacks.rich_progress_bar=null", "callbacks.model_summary=null"]  # fmt: skip
    result = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = (tmp_path / "logs" / "anomaly_yahoo_residual" / "runs").iterdir()
    metrics = json.loads((run / "metrics.json").read_text())
    for kind in ("point", "event"):
        for name in ("precision", "recall", "f1"):
            assert 0.0 <= metrics[f"test/{kind}_{name}"] <= 1.0
    assert metrics["test/points"] == 300.0 and np.isfinite(metrics["test/threshold"])
    task = load_from_checkpoint(metrics["best_ckpt_path"])  # the checkpoint keeps the validation threshold
    assert isinstance(task, AnomalyTask) and float(task.threshold) == pytest.approx(metrics["test/threshold"])
    for stage in ("val", "test"):
        assert (run / "plots" / f"{stage}_anomaly_scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len((tmp_path / "data" / "anomaly" / "yahoo_split.csv").read_text().splitlines()) == 1001
