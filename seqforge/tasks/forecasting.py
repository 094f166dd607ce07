"""Forecasting: losses in the scaled space, metrics in the original units, forecast plots."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanAbsoluteError, MeanMetric, MeanSquaredError, SymmetricMeanAbsolutePercentageError

from seqforge.data.forecast_io import write_forecast_csv
from seqforge.layers.masks import length_mask
from seqforge.metrics import (
    gaussian_crps,
    gaussian_interval,
    interval_coverage,
    interval_levels,
    level_name,
    lognormal_crps,
    pinball_loss,
    quantile_crps,
    symmetric_levels,
)
from seqforge.tasks.base import SequenceTask, datamodule_attr, unpack_batch
from seqforge.tasks.plots import PictureLogger, forecast_figure

if TYPE_CHECKING:
    from seqforge.models.forecaster import Forecaster


PANEL_BATCH = ("history", "lengths", "target", "future", "static", "series")


def quantile_loss(pred: Tensor, target: Tensor, quantiles: Tensor) -> Tensor:
    """Pinball loss averaged over all entries: ``pred`` ``(B, H, Q)``, ``target`` ``(B, H)``, ``quantiles`` ``(Q,)``."""
    return pinball_loss(pred, target, quantiles).mean()


class ForecastingTask(SequenceTask):
    """Forecasting with a :class:`seqforge.models.Forecaster` on ``(history, lengths, target)`` batches, or on
    ``(history, lengths, target, future, static, series)`` batches of many series
    (:class:`seqforge.data.panel.PanelDataModule`): the net also reads ``future`` and ``static``, and the
    metrics invert each row's own series scaler and divide by its series' MASE scale.

    The loss follows the net's head: ``loss`` (``"mse"`` or ``"mae"``) for a point head, Gaussian NLL for
    a Gaussian head, pinball loss for a quantile head. Metrics use the point forecast (mean or median) in
    the original units, inverting the datamodule's ``scaler`` when it has one: ``mae``, ``rmse``,
    ``smape`` (fraction in [0, 2]) and ``mase`` (scaled by the datamodule's ``mase_scale``, the training
    series' mean absolute naive-forecast error, or else by each window's own naive error; NaN when
    ``mase_scale`` is 0, where MASE is undefined).

    Gaussian and quantile heads add probabilistic scores, also in original units (see
    :mod:`seqforge.metrics`): ``crps`` (closed form for the Gaussian, log-normal under a ``log_standard``
    scaler; the quantile-score approximation for quantiles), and for each central interval level in
    ``intervals`` ``coverage_<pct>`` (share of targets inside) and ``width_<pct>`` (mean upper - lower),
    e.g. ``val/coverage_80``. ``intervals=None``: ``(0.8, 0.95)`` for a Gaussian head, the symmetric pairs
    of the quantile levels for a quantile head (``(0.1, 0.5, 0.9)`` gives 80% only); a level whose two
    quantiles the net lacks is an error.

    Monitors ``val/mae`` (min). ``num_plots`` forecasts of the first validation batch (each epoch) and of
    the first test batch (history, truth, forecast and the widest interval) go to the loggers and, when
    the trainer has a logger, also to ``<trainer.default_root_dir>/plots/{val,test}_forecast_<i>.png``
    (``train.py``: the run folder), the latest epoch's overwriting the previous.
    """

    monitor = "val/mae"
    monitor_mode = "min"
    net: Forecaster
    quantiles: Tensor  # the net's quantile levels, a non-persistent buffer

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | Mapping[str, Any] | None = None,
        loss: str = "mse",
        num_plots: int = 3,
        intervals: Sequence[float] | None = None,
    ) -> None:
        super().__init__(net, optimizer, scheduler)
        owner = type(self).__name__
        if loss not in ("mse", "mae"):
            raise ValueError(f"{owner}: loss must be 'mse' or 'mae', got {loss!r}")
        for name in ("head_kind", "quantiles", "point"):
            if not hasattr(net, name):
                raise TypeError(f"{owner}: net must have {name!r} (a seqforge.models.Forecaster)")
        self.register_buffer("quantiles", torch.tensor(net.quantiles, dtype=torch.float32), persistent=False)
        head, levels = net.head_kind, None if intervals is None else tuple(float(v) for v in intervals)
        net_quantiles: tuple[float, ...] = tuple(net.quantiles)  # type: ignore[arg-type]  # checked above
        if head == "point" and levels:
            raise ValueError(f"{owner}: intervals={list(levels)} need a probabilistic head (gaussian or quantile), "
                             "the net's head is 'point'")
        if head == "gaussian":
            levels = (0.8, 0.95) if levels is None else levels
            for level in levels:
                if not 0 < level < 1:
                    raise ValueError(f"{owner}: interval levels must be in (0, 1), got {level}")
        elif head == "quantile":
            levels = symmetric_levels(net_quantiles) if levels is None else levels
        self.levels: tuple[float, ...] = tuple(levels or ())
        # for a quantile head: each level's (lower, upper) channel in the net's output
        self.interval_ends = interval_levels(owner, net_quantiles, self.levels) if head == "quantile" else {}

        def make() -> dict[str, Any]:
            metrics: dict[str, Any] = {
                "mae": MeanAbsoluteError(), "rmse": MeanSquaredError(squared=False),
                "smape": SymmetricMeanAbsolutePercentageError(), "mase": MeanMetric(nan_strategy="disable"),
            }  # fmt: skip
            if head != "point":
                metrics["crps"] = MeanMetric()
                for level in self.levels:
                    metrics[f"coverage_{level_name(level)}"] = MeanMetric()
                    metrics[f"width_{level_name(level)}"] = MeanMetric()
            return metrics

        self.setup_metrics(make)

    def model_step(self, batch: Any) -> dict[str, Any]:
        name = type(self).__name__
        if isinstance(batch, (tuple, list)) and len(batch) == len(PANEL_BATCH):  # many series (PanelDataModule)
            history, lengths, target, future, static, series = unpack_batch(name, batch, PANEL_BATCH)
            out = self.net(history, lengths, future=future, static=static)  # (B, H, P)
        else:
            history, lengths, target = unpack_batch(name, batch, ("history", "lengths", "target"))
            series, out = None, self.net(history, lengths)
        if out.shape[:2] != target.shape:
            raise ValueError(f"{name}: net forecasts {tuple(out.shape[:2])} (B, horizon) but targets are "
                             f"{tuple(target.shape)}; do the datamodule's and the net's horizon match?")
        head = self.net.head_kind
        if head == "gaussian":
            loss = F.gaussian_nll_loss(out[..., 0], target, out[..., 1])
        elif head == "quantile":
            loss = quantile_loss(out, target, self.quantiles)
        else:
            loss = (F.mse_loss if self.hparams.loss == "mse" else F.l1_loss)(out[..., 0], target)
        return {
            "loss": loss, "preds": self.net.point(out).detach(), "target": target, "batch_size": target.shape[0],
            "history": history, "lengths": lengths, "out": out.detach(), "series": series,
        }  # fmt: skip

    def scaler(self) -> Any:
        """The fitted scaler of the trainer's datamodule, else of the one ``load_from_checkpoint`` attached."""
        scaler = datamodule_attr(self, "scaler")
        return scaler if scaler is not None else getattr(getattr(self, "datamodule", None), "scaler", None)

    def to_original(self, x: Tensor, series: Tensor | None = None) -> Tensor:
        """``x`` ``(B, ...)`` in original units; ``series`` ``(B,)``: each row's series, whose scaler applies
        (a :class:`seqforge.data.panel.PanelDataModule` scales every series on its own)."""
        scaler = self.scaler()
        if scaler is None:
            return x
        return scaler.inverse_transform(x) if series is None else scaler.inverse_transform(x, series)

    @torch.no_grad()
    def forecast(
        self, history: Tensor, lengths: Tensor | None = None, future: Tensor | None = None,
        static: Tensor | None = None, series: Tensor | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """Forecast in original units from scaled ``history`` ``(B, W, input_size)`` (and, for a net over
        many series, ``future`` ``(B, H, F)``, ``static`` ``(B, S)`` and the rows' ``series`` ``(B,)``).

        Returns ``{"prediction": (B, H), "intervals": {level: (lower, upper)}}`` as numpy arrays (no
        intervals for a point head): the keywords of :func:`seqforge.data.forecast_io.write_forecast_csv`.
        """
        context = {} if future is None and static is None else {"future": future, "static": static}
        out = self.net(history, lengths, **context)  # (B, H, P)

        def orig(x: Tensor) -> Any:
            return self.to_original(x, series).cpu().numpy()

        bounds = {level: (orig(lo), orig(hi)) for level, (lo, hi) in self.intervals(out).items()}
        return {"prediction": orig(self.net.point(out)), "intervals": bounds}

    def intervals(self, out: Tensor) -> dict[float, tuple[Tensor, Tensor]]:
        """``{level: (lower, upper)}``, each ``(B, H)``, in the space of ``out`` ``(B, H, P)`` (scaled)."""
        if self.net.head_kind == "gaussian":
            return {level: gaussian_interval(out[..., 0], out[..., 1].sqrt(), level) for level in self.levels}
        return {level: (out[..., lo], out[..., hi]) for level, (lo, hi) in self.interval_ends.items()}

    def crps(self, out: Tensor, target: Tensor, series: Tensor | None = None) -> Tensor:
        """CRPS ``(B, H)`` in original units of the forecast ``out`` ``(B, H, P)`` (scaled) at ``target``
        ``(B, H)`` (original units); ``series`` as in :meth:`to_original`."""
        if self.net.head_kind == "quantile":  # quantiles map through the (increasing) inverse scaling
            return quantile_crps(self.to_original(out, series), target, self.quantiles)
        mean, std = out[..., 0], out[..., 1].sqrt()
        scaler = self.scaler()
        if scaler is None:
            return gaussian_crps(mean, std, target)
        shift, scale = (scaler.shift, scaler.scale) if series is None else scaler.rows(series, mean)
        mean, std = mean * scale + shift, std * scale  # of the log under log_standard
        return (lognormal_crps if scaler.kind == "log_standard" else gaussian_crps)(mean, std, target)

    def update_metrics(self, stage: str, out: dict[str, Any]) -> None:
        metrics, series = self.metrics(stage), out["series"]
        pred, target = self.to_original(out["preds"], series), self.to_original(out["target"], series)
        for name in ("mae", "rmse", "smape"):
            metrics[name].update(pred, target)
        scale = datamodule_attr(self, "mase_scale")
        if series is not None and scale is not None:  # one MASE scale per series (the panel refuses constant ones)
            scale = torch.tensor(scale, dtype=pred.dtype, device=pred.device)[series]
        elif scale is None:  # each window's own in-sample naive (one-step) error
            history = self.to_original(out["history"][..., 0], series)  # (B, W)
            steps = history.diff(dim=1).abs()
            valid = length_mask(out["lengths"].to(steps.device) - 1, steps.shape[1])  # (B, W - 1): valid diffs
            scale = (steps * valid).sum(1) / valid.sum(1).clamp(min=1)
            scale = scale.clamp(min=1e-8)
        elif scale == 0:  # the data module warned: MASE is undefined for this series
            scale = math.nan
        metrics["mase"].update((pred - target).abs().mean(dim=1) / scale)
        if self.net.head_kind == "point":
            return
        metrics["crps"].update(self.crps(out["out"], target, series))
        for level, (lower, upper) in self.intervals(out["out"]).items():
            lower, upper = self.to_original(lower, series), self.to_original(upper, series)
            metrics[f"coverage_{level_name(level)}"].update(interval_coverage(lower, upper, target))
            metrics[f"width_{level_name(level)}"].update(upper - lower)

    def keep_examples(self, batch: Any, out: dict[str, Any]) -> None:
        k = self.hparams.num_plots
        self.examples = None
        if k > 0:
            self.examples = {key: None if out[key] is None else out[key][:k].detach().cpu()
                             for key in ("history", "lengths", "target", "out", "series")}  # fmt: skip
            testing = self._trainer is not None and self.trainer.testing  # no trainer: called directly
            self.examples["stage"] = "test" if testing else "val"

    def test_step(self, batch: Any, batch_idx: int) -> None:
        out = self._step(batch, "test")
        if batch_idx == 0:
            self.keep_examples(batch, out)

    def on_test_epoch_end(self) -> None:
        writer = PictureLogger(self.trainer.loggers, folder=self.picture_folder())
        if writer and getattr(self, "examples", None) is not None:
            self.log_pictures(writer, self.examples)

    def picture_folder(self) -> Path | None:
        return Path(self.trainer.default_root_dir) / "plots" if self.trainer.loggers else None

    def log_pictures(self, writer: Any, examples: dict[str, Any]) -> None:
        out = examples["out"]
        point = self.net.point(out)
        widest = max(self.levels, default=None)
        lower, upper = self.intervals(out)[widest] if widest is not None else (None, None)
        stage, series = examples.get("stage", "val"), examples.get("series")
        for i in range(out.shape[0]):
            n = int(examples["lengths"][i])

            def orig(x: Tensor | None, i: int = i) -> Any:
                return None if x is None else self.to_original(x, series)[i].numpy()

            band = "" if widest is None else f", {widest:.0%} interval"
            fig = forecast_figure(
                orig(examples["history"][..., 0])[:n], orig(examples["target"]), orig(point),
                orig(lower), orig(upper), title=f"{stage} example {i}{band}",
            )  # fmt: skip
            writer.add_figure(f"{stage}/forecast_{i}", fig, global_step=self.global_step)


def write_panel_forecasts(
    task: L.LightningModule,
    output_file: str | Path,
    path: str | Path | None = None,
    plot_folder: str | Path | None = None,
    num_plots: int = 3,
) -> dict[str, Any]:
    """Forecast every series of a long table past its last target and write the forecasts as CSV.

    ``task`` holds a :class:`seqforge.data.panel.PanelDataModule` with fitted state (``load_from_checkpoint``
    attaches it); ``path``: the table (default: the training one), read and checked like the training data,
    each series forecast from its last ``window`` rows over its future rows (see
    :meth:`~seqforge.data.panel.PanelDataModule.forecast_inputs`). The CSV (:func:`write_forecast_csv`) has
    ``series, step, time, prediction`` (the mean, or the median of a quantile head) and the interval bounds
    ``lower_<pct>, upper_<pct>`` of each level in ``task.levels``. With ``plot_folder``, the first
    ``num_plots`` series get ``<series>.png`` there (history, forecast, widest interval). Returns
    :meth:`ForecastingTask.forecast`'s dictionary plus ``series_ids`` and ``times``.
    """
    dm: Any = getattr(task, "datamodule", None)
    if not isinstance(task, ForecastingTask) or not hasattr(dm, "forecast_inputs"):
        raise TypeError(f"write_panel_forecasts: needs a ForecastingTask with a PanelDataModule (a table of many "
                        f"series), got a {type(task).__name__} with a {type(dm).__name__}")
    inputs = dm.forecast_inputs(path)
    history, lengths, future, static, series = (x.to(task.device) for x in inputs["batch"])
    task.eval()
    result = task.forecast(history, lengths, future=future, static=static, series=series)
    Path(output_file).parent.mkdir(parents=True, exist_ok=True)
    write_forecast_csv(output_file, result["prediction"], result["intervals"], series=inputs["series_ids"],
                       times=inputs["times"])  # fmt: skip
    if plot_folder is not None:
        folder = Path(plot_folder)
        folder.mkdir(parents=True, exist_ok=True)
        widest = max(task.levels, default=None)
        for i, name in enumerate(inputs["series_ids"][:num_plots]):
            lower, upper = result["intervals"][widest] if widest is not None else (None, None)
            fig = forecast_figure(
                inputs["history"][i], np.full(dm.horizon, np.nan), result["prediction"][i],
                None if lower is None else lower[i], None if upper is None else upper[i],
                title=f"{name}: forecast {inputs['times'][i][0]} to {inputs['times'][i][-1]} (no truth yet)",
            )  # fmt: skip
            fig.savefig(folder / f"{name}.png", dpi=100)
    return {**result, "series_ids": inputs["series_ids"], "times": inputs["times"]}
