"""Anomaly detection on a labelled series: scores, a threshold chosen on validation data only, and
point-wise and event-wise precision, recall and F1.

Scores are any per-point array where larger means more anomalous: :func:`residual_scores` (the absolute
error of a forecaster's one-step-ahead forecast, e.g. from ``ForecastingTask.forecast``) or the baseline
:func:`rolling_zscore` (distance to the mean of the previous ``window`` points, in their standard
deviations). :func:`detect` picks the threshold that maximizes point-wise F1 on the validation part and
only then applies it to the test part, whose labels are used for scoring alone.

:class:`AnomalyTask` trains a net on normal windows and turns its reconstruction errors or forecast residuals
into per-point scores (:func:`window_scores`), thresholds them on validation (:func:`choose_threshold`, or
:func:`quantile_threshold` when validation holds no anomaly) and reports :func:`evaluate` on the test part;
:func:`anomaly_figure` draws the series, its labels, the scores and the threshold.

Events are maximal runs of consecutive positive labels. Event-wise recall is the share of true events with
at least one flagged point; event-wise precision the share of flagged runs that touch a true event.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from matplotlib.figure import Figure
from torch import Tensor, nn

from seqforge.tasks.base import SequenceTask, datamodule_attr, unpack_batch
from seqforge.tasks.plots import PictureLogger


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
    scores, labels = check_scores("choose_threshold", scores, labels)
    if not labels.any():
        raise ValueError("choose_threshold: the validation labels hold no anomaly, so no threshold can be chosen")
    best, best_f1 = float(scores.max()), -1.0
    for candidate in np.unique(scores[np.isfinite(scores)])[::-1]:
        f1 = point_scores(scores >= candidate, labels)["f1"]
        if f1 > best_f1:
            best, best_f1 = float(candidate), f1
    return best


def quantile_threshold(scores: Any, quantile: float) -> float:
    """A threshold from validation scores alone, for validation data without labelled anomalies: the
    ``quantile`` of the finite scores, nudged up so that only points scoring *above* it are flagged
    (``quantile=1.0``: no validation point is flagged)."""
    if not 0.0 < quantile <= 1.0:
        raise ValueError(f"quantile_threshold: quantile must be in (0, 1], got {quantile!r}")
    finite = np.asarray(scores, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if not finite.size:
        raise ValueError("quantile_threshold: no finite validation score to take a quantile of")
    return float(np.nextafter(np.quantile(finite, quantile), np.inf))


def check_scores(owner: str, scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """``scores`` ``(T,)`` float64 without NaN (``-inf`` allowed: never flagged) and ``labels`` ``(T,)`` bool."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels)
    if scores.ndim != 1 or labels.shape != scores.shape:
        raise ValueError(f"{owner}: scores and labels must be 1-D of one length, got scores {scores.shape} and "
                         f"labels {labels.shape}")
    nan = np.flatnonzero(np.isnan(scores))
    if nan.size:
        raise ValueError(f"{owner}: scores holds {nan.size} NaN values, the first at index {int(nan[0])}")
    return scores, labels.astype(bool)


def evaluate(scores: Any, labels: Any, threshold: float) -> dict[str, float]:
    """``point_*`` and ``event_*`` precision, recall, F1 of flagging ``scores >= threshold`` (``(T,)`` each)."""
    scores, labels = check_scores("evaluate", scores, labels)
    flags = scores >= threshold
    out: dict[str, float] = {}
    for kind, score in (("point", point_scores), ("event", event_scores)):
        out |= {f"{kind}_{k}": v for k, v in score(flags, labels).items()}
    return out


def detect(scores: Any, labels: Any, val: slice, test: slice, quantile: float | None = None) -> dict[str, float]:
    """Threshold from ``scores[val]``/``labels[val]`` only (best F1, or with ``quantile`` the
    :func:`quantile_threshold` of the validation scores, reading no label), then ``test/point_*`` and
    ``test/event_*`` scores on the test part (and ``threshold``, ``val/point_f1``)."""
    scores, labels = check_scores("detect", scores, labels)
    if quantile is None:
        threshold = choose_threshold(scores[val], labels[val])
    else:
        threshold = quantile_threshold(scores[val], quantile)
    out = {"threshold": threshold, "val/point_f1": point_scores(scores[val] >= threshold, labels[val])["f1"]}
    return out | {f"test/{k}": v for k, v in evaluate(scores[test], labels[test], threshold).items()}


def window_scores(errors: Any, positions: Any, length: int) -> np.ndarray:
    """Per-point scores ``(length,)``: the mean of the window errors ``(N, K)`` at their series positions
    ``(N, K)`` (each point's error averaged over the windows that cover it); NaN where no window does."""
    errors, positions = np.asarray(errors, dtype=np.float64), np.asarray(positions, dtype=np.int64)
    if errors.shape != positions.shape:
        raise ValueError(f"window_scores: errors {errors.shape} and positions {positions.shape} must match")
    total, count = np.zeros(length), np.zeros(length)
    np.add.at(total, positions.ravel(), errors.ravel())
    np.add.at(count, positions.ravel(), 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


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


def anomaly_figure(values: np.ndarray, labels: np.ndarray, scores: np.ndarray, threshold: float, start: int = 0,
                   title: str = "") -> Figure:
    """The series ``(N,)`` with its labelled anomalies, and below it the scores ``(N,)`` with the threshold and
    the flagged points; the x axis is the index in the whole series (from ``start``)."""
    fig = Figure(figsize=(8, 4))
    top, bottom = fig.subplots(2, 1, sharex=True)
    t = np.arange(start, start + len(values))
    top.plot(t, values, color="black", linewidth=0.8, label="series")
    top.scatter(t[labels], values[labels], color="tab:red", s=12, zorder=3, label="labelled anomaly")
    top.legend(loc="upper left", fontsize="small")
    top.set_title(title)
    bottom.plot(t, scores, color="tab:blue", linewidth=0.8, label="score")
    if np.isfinite(threshold):
        flagged = scores >= threshold
        bottom.axhline(threshold, color="tab:orange", linestyle="--", label=f"threshold {threshold:.3g}")
        bottom.scatter(t[flagged], scores[flagged], color="tab:orange", s=10, zorder=3, label="flagged")
    bottom.legend(loc="upper left", fontsize="small")
    bottom.set_xlabel("index")
    fig.tight_layout()
    return fig


SCORES = ("reconstruction", "residual")


class AnomalyTask(SequenceTask):
    """Anomaly detection on the ``(window, lengths, index)`` batches of
    :class:`seqforge.data.anomaly.AnomalyDataModule`: train on normal windows, score every validation and test
    point, threshold on validation only, report point- and event-wise precision, recall and F1.

    ``score="reconstruction"``: the net (a :class:`seqforge.models.RecurrentAutoencoder`) reconstructs each
    window; a point's score is its absolute reconstruction error averaged over the windows covering it.
    ``score="residual"``: the net (a :class:`seqforge.models.Forecaster` with ``horizon=1`` and a point head)
    forecasts each window's last point from the ones before; the score is the absolute residual
    (:func:`residual_scores`). The loss is the mean squared error of either, in scaled units.

    After each validation epoch the task scores the validation part and sets ``threshold`` (a buffer, so the
    checkpoint keeps it) from the validation scores and labels alone: the best point-wise F1
    (:func:`choose_threshold`), or with ``quantile`` the :func:`quantile_threshold` of the validation scores,
    which reads no label (for validation data without anomalies). It logs ``val/threshold``,
    ``val/point_f1`` and ``val/event_f1``. Test applies that threshold to the test part and logs
    ``test/point_{precision,recall,f1}``, ``test/event_{precision,recall,f1}`` and ``test/threshold``; the
    test labels are read only there. Monitors ``val/loss`` (min).

    Only points that some window scored count (all of them, unless ``limit_val_batches`` cut the loop;
    ``val/points`` and ``test/points`` say how many). ``num_plots > 0``: an anomaly-score plot
    (:func:`anomaly_figure`) of the validation part (each epoch) and of the test part goes to the loggers
    and to ``<trainer.default_root_dir>/plots/{val,test}_anomaly_scores.png``. One process only.
    """

    monitor = "val/loss"
    monitor_mode = "min"
    threshold: Tensor

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | Mapping[str, Any] | None = None,
        score: str = "reconstruction",
        quantile: float | None = None,
        num_plots: int = 1,
    ) -> None:
        super().__init__(net, optimizer, scheduler)
        owner = type(self).__name__
        if score not in SCORES:
            raise ValueError(f"{owner}: score must be one of {SCORES}, got {score!r}")
        if score == "residual" and (getattr(net, "horizon", None) != 1 or getattr(net, "head_kind", None) != "point"):
            raise ValueError(f"{owner}: score='residual' needs a one-step point forecaster (seqforge.models.Forecaster "
                             f"with horizon=1, head='point'), got {type(net).__name__} with horizon="
                             f"{getattr(net, 'horizon', None)!r}, head={getattr(net, 'head_kind', None)!r}")
        if quantile is not None:
            quantile_threshold([0.0], quantile)  # checks the range now, before training
        self.register_buffer("threshold", torch.tensor(float("nan")))
        self.collected: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"val": [], "test": []}
        self.setup_metrics(lambda: {})  # no per-batch metrics: the scores are judged per point at the epoch end

    def model_step(self, batch: Any) -> dict[str, Any]:
        name = type(self).__name__
        x, lengths, index = unpack_batch(name, batch, ("window", "lengths", "index"))
        if self.hparams.score == "residual":
            out = self.net(x[:, :-1], lengths - 1)  # (B, 1, 1)
            errors = out[:, :, 0] - x[:, -1:, 0]  # (B, 1)
            positions = index.unsqueeze(1)  # (B, 1)
        else:
            out = self.net(x, lengths)  # (B, W, I)
            if out.shape != x.shape:
                raise ValueError(f"{name}: score='reconstruction' needs the net to return the window's shape "
                                 f"{tuple(x.shape)}, got {tuple(out.shape)}")
            errors = (out - x).abs().mean(-1)  # (B, W)
            positions = index.unsqueeze(1) - x.shape[1] + 1 + torch.arange(x.shape[1], device=x.device)
        loss = errors.square().mean() if self.hparams.score == "residual" else (out - x).square().mean()
        return {"loss": loss, "errors": errors.detach().abs(), "positions": positions, "batch_size": x.shape[0]}

    def update_metrics(self, stage: str, out: dict[str, Any]) -> None:
        if stage in self.collected:
            self.collected[stage].append((out["errors"].cpu().numpy(), out["positions"].cpu().numpy()))

    def setup(self, stage: str) -> None:
        if self.trainer.world_size > 1:  # each process would score only its share of the points
            raise ValueError(f"{type(self).__name__}: scores the whole series in one process; got "
                             f"{self.trainer.world_size} processes (use trainer.devices=1)")

    def on_validation_epoch_start(self) -> None:
        self.collected["val"] = []

    def on_test_epoch_start(self) -> None:
        self.collected["test"] = []

    def part_scores(self, stage: str) -> dict[str, Any]:
        """The scored points of the stage's part: ``values``, ``labels``, ``scores`` ``(N,)`` and ``start``."""
        series, labels = datamodule_attr(self, "series"), datamodule_attr(self, "labels")
        parts = datamodule_attr(self, "parts")
        if series is None or labels is None or not parts:
            raise ValueError(f"{type(self).__name__}: needs a datamodule with series, labels and parts "
                             "(seqforge.data.anomaly.AnomalyDataModule)")
        part = parts[stage]
        collected = self.collected[stage]
        errors = np.concatenate([e.reshape(len(e), -1) for e, _ in collected]) if collected else np.zeros((0, 1))
        positions = np.concatenate([p.reshape(len(p), -1) for _, p in collected]) if collected else np.zeros((0, 1))
        scores = window_scores(errors, positions, len(series))[part]
        covered = np.isfinite(scores)
        first = int(np.argmax(covered)) if covered.any() else 0
        last = len(scores) - int(np.argmax(covered[::-1])) if covered.any() else 0
        window = slice(first, last)  # the scored points of the part are one run (loops cut at the end only)
        return {"values": series[part][window], "labels": labels[part][window], "scores": scores[window],
                "start": part.start + first}  # fmt: skip

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            super().on_validation_epoch_end()
            return
        part = self.part_scores("val")
        quantile = self.hparams.quantile
        if quantile is None and not part["labels"].any():
            rank_zero_warn(f"{type(self).__name__}: the scored validation points hold no labelled anomaly, so no "
                           "threshold is chosen (set quantile= to choose one from the scores alone)")
            threshold = float("nan")
        elif len(part["scores"]):
            threshold = (choose_threshold(part["scores"], part["labels"]) if quantile is None
                         else quantile_threshold(part["scores"], quantile))  # fmt: skip
        else:
            threshold = float("nan")
        self.threshold.fill_(threshold)
        found = evaluate(part["scores"], part["labels"], threshold)
        if not np.isfinite(threshold):
            found = dict.fromkeys(found, float("nan"))
        self.log_dict({"val/threshold": threshold, "val/point_f1": found["point_f1"],
                       "val/event_f1": found["event_f1"], "val/points": float(len(part["scores"]))})  # fmt: skip
        self.examples = {"stage": "val", **part, "threshold": threshold} if self.hparams.num_plots > 0 else None
        super().on_validation_epoch_end()

    def on_test_epoch_end(self) -> None:
        part = self.part_scores("test")
        threshold = float(self.threshold)
        if not np.isfinite(threshold):
            rank_zero_warn(f"{type(self).__name__}: no threshold was chosen on validation data (fit first, or the "
                           "validation points held no anomaly): the test scores are NaN")
        found = evaluate(part["scores"], part["labels"], threshold)
        if not np.isfinite(threshold):
            found = dict.fromkeys(found, float("nan"))
        self.log_dict({**{f"test/{k}": v for k, v in found.items()}, "test/threshold": threshold,
                       "test/points": float(len(part["scores"]))})  # fmt: skip
        writer = PictureLogger(self.trainer.loggers, folder=self.picture_folder())
        if writer and self.hparams.num_plots > 0:
            self.log_pictures(writer, {"stage": "test", **part, "threshold": threshold})

    def picture_folder(self) -> Path | None:
        return Path(self.trainer.default_root_dir) / "plots" if self.trainer.loggers else None

    def log_pictures(self, writer: Any, examples: dict[str, Any]) -> None:
        stage = examples["stage"]
        fig = anomaly_figure(examples["values"], examples["labels"], examples["scores"], examples["threshold"],
                             start=examples["start"], title=f"{stage} part: anomaly scores ({self.hparams.score})")
        writer.add_figure(f"{stage}/anomaly_scores", fig, global_step=self.global_step)
