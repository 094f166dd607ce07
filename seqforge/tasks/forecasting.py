"""Forecasting: losses in the scaled space, metrics in the original units, forecast plots."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanAbsoluteError, MeanMetric, MeanSquaredError, SymmetricMeanAbsolutePercentageError

from seqforge.tasks.base import SequenceTask, datamodule_attr, unpack_batch
from seqforge.tasks.plots import forecast_figure

if TYPE_CHECKING:
    from seqforge.models.forecaster import Forecaster


def quantile_loss(pred: Tensor, target: Tensor, quantiles: Tensor) -> Tensor:
    """Pinball loss averaged over all entries: ``pred`` ``(B, H, Q)``, ``target`` ``(B, H)``, ``quantiles`` ``(Q,)``."""
    diff = target.unsqueeze(-1) - pred
    return torch.maximum(quantiles * diff, (quantiles - 1) * diff).mean()


class ForecastingTask(SequenceTask):
    """Forecasting with a :class:`seqforge.models.Forecaster` on ``(history, lengths, target)`` batches.

    The loss follows the net's head: ``loss`` (``"mse"`` or ``"mae"``) for a point head, Gaussian NLL for
    a Gaussian head, pinball loss for a quantile head. Metrics use the point forecast (mean or median) in
    the original units, inverting the datamodule's ``scaler`` when it has one: ``mae``, ``rmse``,
    ``smape`` (fraction in [0, 2]) and ``mase`` (scaled by the datamodule's ``mase_scale``, the training
    series' mean absolute naive-forecast error, or else by each window's own naive error).
    Monitors ``val/mae`` (min). ``num_plots`` validation forecasts go to the loggers each epoch.
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
    ) -> None:
        super().__init__(net, optimizer, scheduler)
        if loss not in ("mse", "mae"):
            raise ValueError(f"ForecastingTask: loss must be 'mse' or 'mae', got {loss!r}")
        for name in ("head_kind", "quantiles", "point"):
            if not hasattr(net, name):
                raise TypeError(f"ForecastingTask: net must have {name!r} (a seqforge.models.Forecaster)")
        self.register_buffer("quantiles", torch.tensor(net.quantiles, dtype=torch.float32), persistent=False)
        self.setup_metrics(lambda: {
            "mae": MeanAbsoluteError(), "rmse": MeanSquaredError(squared=False),
            "smape": SymmetricMeanAbsolutePercentageError(), "mase": MeanMetric(),
        })  # fmt: skip

    def model_step(self, batch: Any) -> dict[str, Any]:
        name = type(self).__name__
        history, lengths, target = unpack_batch(name, batch, ("history", "lengths", "target"))
        out = self.net(history, lengths)  # (B, H, P)
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
            "history": history, "lengths": lengths, "out": out.detach(),
        }  # fmt: skip

    def to_original(self, x: Tensor) -> Tensor:
        scaler = datamodule_attr(self, "scaler")
        return scaler.inverse_transform(x) if scaler is not None else x

    def update_metrics(self, stage: str, out: dict[str, Any]) -> None:
        metrics = self.metrics(stage)
        pred, target = self.to_original(out["preds"]), self.to_original(out["target"])
        for name in ("mae", "rmse", "smape"):
            metrics[name].update(pred, target)
        scale = datamodule_attr(self, "mase_scale")
        if scale is None:  # each window's own in-sample naive (one-step) error
            history = self.to_original(out["history"][..., 0])  # (B, W)
            steps = history.diff(dim=1).abs()
            valid = torch.arange(steps.shape[1], device=steps.device) < (out["lengths"].to(steps.device) - 1)[:, None]
            scale = (steps * valid).sum(1) / valid.sum(1).clamp(min=1)
            scale = scale.clamp(min=1e-8)
        metrics["mase"].update((pred - target).abs().mean(dim=1) / scale)

    def keep_examples(self, batch: Any, out: dict[str, Any]) -> None:
        k = self.hparams.num_plots
        self.examples = None
        if k > 0:
            self.examples = {key: out[key][:k].detach().cpu() for key in ("history", "lengths", "target", "out")}

    def log_pictures(self, writer: Any, examples: dict[str, Tensor]) -> None:
        out, head = examples["out"], self.net.head_kind
        point = self.net.point(out)
        lower = upper = None
        if head == "gaussian":
            half = 1.96 * out[..., 1].sqrt()
            lower, upper = point - half, point + half
        elif head == "quantile":
            levels = self.net.quantiles
            lower, upper = out[..., levels.index(min(levels))], out[..., levels.index(max(levels))]
        for i in range(out.shape[0]):
            n = int(examples["lengths"][i])

            def orig(x: Tensor | None, i: int = i) -> Any:
                return None if x is None else self.to_original(x[i]).numpy()

            fig = forecast_figure(
                self.to_original(examples["history"][i, :n, 0]).numpy(), orig(examples["target"]), orig(point),
                orig(lower), orig(upper), title=f"example {i}",
            )  # fmt: skip
            writer.add_figure(f"val/forecast_{i}", fig, global_step=self.global_step)
