"""Anomaly detection on a labelled series: scores, a threshold chosen on validation data only, and
point-wise and event-wise precision, recall and F1.

Scores are any per-point array where larger means more anomalous: :func:`residual_scores` (the absolute
error of a forecaster's one-step-ahead forecast, e.g. from ``ForecastingTask.forecast``) or the baseline
:func:`rolling_zscore` (distance to the mean of the previous ``window`` points, in their standard
deviations). :func:`detect` picks the threshold that maximizes point-wise F1 on the validation part and
only then applies it to the test part, whose labels are used for scoring alone.

Events are maximal runs of consecutive positive labels. Event-wise recall is the share of true events with
at least one flagged point; event-wise precision the share of flagged runs that touch a true event.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _prf(precision: float, recall: float) -> dict[str, float]:
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def _share(part: float, whole: float) -> float:
    return part / whole if whole else 0.0


def _check(owner: str, flags: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    flags, labels = np.asarray(flags).astype(bool), np.asarray(labels).astype(bool)
    if flags.shape != labels.shape or flags.ndim != 1:
        raise ValueError(f"{owner}: flags and labels must be 1-D of one length, got {flags.shape} and {labels.shape}")
    return flags, labels


def point_scores(flags: Any, labels: Any) -> dict[str, float]:
    """Point-wise precision, recall, F1 of boolean ``flags`` ``(T,)`` against ``labels`` ``(T,)``."""
    flags, labels = _check("point_scores", flags, labels)
    tp = float((flags & labels).sum())
    return _prf(_share(tp, float(flags.sum())), _share(tp, float(labels.sum())))


def events(labels: Any) -> list[tuple[int, int]]:
    """Maximal runs of True in ``labels`` ``(T,)`` as half-open ``(start, end)`` index pairs."""
    padded = np.concatenate([[False], np.asarray(labels).astype(bool), [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]


def event_scores(flags: Any, labels: Any) -> dict[str, float]:
    """Event-wise precision (flagged runs touching a true event), recall (true events with a flag), F1."""
    flags, labels = _check("event_scores", flags, labels)
    true, flagged = events(labels), events(flags)
    hit = sum(bool(flags[a:b].any()) for a, b in true)
    touching = sum(bool(labels[a:b].any()) for a, b in flagged)
    return _prf(_share(touching, len(flagged)), _share(hit, len(true)))


def choose_threshold(scores: Any, labels: Any) -> float:
    """The threshold ``s`` (flag ``score >= s``) with the best point-wise F1 on the given (validation) data;
    ties go to the highest threshold (fewest flags). Needs at least one positive label."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(bool)
    if not labels.any():
        raise ValueError("choose_threshold: the validation labels hold no anomaly, so no threshold can be chosen")
    best, best_f1 = float(scores.max()), -1.0
    for candidate in np.unique(scores[np.isfinite(scores)])[::-1]:
        f1 = point_scores(scores >= candidate, labels)["f1"]
        if f1 > best_f1:
            best, best_f1 = float(candidate), f1
    return best


def detect(scores: Any, labels: Any, val: slice, test: slice) -> dict[str, float]:
    """Threshold from ``scores[val]``/``labels[val]`` only, then ``test/point_*`` and ``test/event_*`` scores
    on the test part (and ``threshold``, ``val/point_f1``)."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(bool)
    threshold = choose_threshold(scores[val], labels[val])
    out = {"threshold": threshold, "val/point_f1": point_scores(scores[val] >= threshold, labels[val])["f1"]}
    flags = scores[test] >= threshold
    for kind, score in (("point", point_scores), ("event", event_scores)):
        out |= {f"test/{kind}_{k}": v for k, v in score(flags, labels[test]).items()}
    return out


def rolling_zscore(series: Any, window: int) -> np.ndarray:
    """``|x_t - mean| / std`` over the previous ``window`` points (the past only); the first ``window``
    points, which have no full past, score ``-inf`` (never flagged)."""
    x = np.asarray(series, dtype=np.float64)
    if window < 2 or window >= len(x):
        raise ValueError(f"rolling_zscore: window must be in [2, {len(x) - 1}] for a series of {len(x)}, got {window}")
    past = np.lib.stride_tricks.sliding_window_view(x[:-1], window)  # (T - window, window): x[t - w : t]
    std = past.std(axis=1)
    z = np.abs(x[window:] - past.mean(axis=1)) / np.where(std > 0, std, np.inf)
    return np.concatenate([np.full(window, -np.inf), z])


def residual_scores(prediction: Any, truth: Any) -> np.ndarray:
    """Absolute one-step-ahead forecast errors ``|truth - prediction|`` ``(T,)``."""
    return np.abs(np.asarray(truth, dtype=np.float64) - np.asarray(prediction, dtype=np.float64))
