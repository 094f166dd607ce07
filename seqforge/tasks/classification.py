"""Many-to-one tasks: classification (accuracy, macro-F1) and regression (MAE, MSE, RMSE)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanAbsoluteError, MeanSquaredError
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from seqforge.tasks.base import SequenceTask, check_class_ids, check_label_smoothing, unpack_batch


class ClassificationTask(SequenceTask):
    """Sequence classification on batches ``(x, lengths, y)``; ``y`` ``(B,)`` int64 class ids.

    Args:
        num_classes: defaults to ``net.num_classes``.
        label_smoothing: cross-entropy label smoothing in ``[0, 1)``.

    Logs ``<stage>/loss``, ``<stage>/acc``, ``<stage>/f1`` (macro) and ``val/acc_best``.
    """

    monitor = "val/acc"
    monitor_mode = "max"
    ignore_index: int | None = None  # a label value that loss and metrics skip (padding, for tagging)

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | Mapping[str, Any] | None = None,
        num_classes: int | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(net, optimizer, scheduler)
        name = type(self).__name__
        classes = num_classes or getattr(net, "num_classes", None)
        if not classes:
            raise ValueError(f"{name}: num_classes is needed (pass it, or use a net with num_classes)")
        self.num_classes: int = classes
        self.label_smoothing = check_label_smoothing(name, label_smoothing)
        self.setup_metrics(lambda: {
            "acc": MulticlassAccuracy(self.num_classes, average="micro", ignore_index=self.ignore_index),
            "f1": MulticlassF1Score(self.num_classes, average="macro", ignore_index=self.ignore_index),
        })  # fmt: skip

    def model_step(self, batch: Any) -> dict[str, Any]:
        x, lengths, y = unpack_batch(type(self).__name__, batch, ("x", "lengths", "y"))
        check_class_ids(type(self).__name__, "y", y, self.num_classes)
        logits = self.net(x, lengths)  # (B, C)
        if logits.shape != (y.shape[0], self.num_classes):
            raise ValueError(
                f"ClassificationTask: net returned {tuple(logits.shape)}, expected ({y.shape[0]}, {self.num_classes})"
            )
        loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        return {"loss": loss, "preds": logits.argmax(-1), "target": y, "batch_size": y.shape[0]}


class RegressionTask(SequenceTask):
    """Sequence regression on batches ``(x, lengths, y)``; ``y`` ``(B,)`` or ``(B, O)`` floats.

    Args:
        loss: ``"mse"`` or ``"mae"``.

    Logs ``<stage>/loss``, ``<stage>/mae``, ``<stage>/mse``, ``<stage>/rmse`` and ``val/mse_best``.
    """

    monitor = "val/mse"
    monitor_mode = "min"

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | Mapping[str, Any] | None = None,
        loss: str = "mse",
    ) -> None:
        super().__init__(net, optimizer, scheduler)
        if loss not in ("mse", "mae"):
            raise ValueError(f"RegressionTask: loss must be 'mse' or 'mae', got {loss!r}")
        self.loss_fn = F.mse_loss if loss == "mse" else F.l1_loss
        self.setup_metrics(lambda: {
            "mae": MeanAbsoluteError(), "mse": MeanSquaredError(), "rmse": MeanSquaredError(squared=False),
        })  # fmt: skip

    def model_step(self, batch: Any) -> dict[str, Any]:
        x, lengths, y = unpack_batch(type(self).__name__, batch, ("x", "lengths", "y"))
        preds = self.net(x, lengths)  # (B, O)
        if y.dim() == 1 and preds.dim() == 2 and preds.shape[1] == 1:
            preds = preds.squeeze(-1)
        if preds.shape != y.shape:
            raise ValueError(f"RegressionTask: net returned {tuple(preds.shape)} but targets are {tuple(y.shape)}")
        y = y.to(preds.dtype)
        return {"loss": self.loss_fn(preds, y), "preds": preds.detach(), "target": y, "batch_size": y.shape[0]}
