"""Anomaly detection: point- and event-wise scores, a threshold chosen without test labels, baselines."""

from __future__ import annotations

import numpy as np
import pytest

from seqforge.data.series import labelled_series
from seqforge.tasks.anomaly import (
    choose_threshold,
    detect,
    event_scores,
    events,
    point_scores,
    residual_scores,
    rolling_zscore,
)


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
