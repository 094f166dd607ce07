"""Per-step labelling: padded steps (label ``-100``) are ignored by the loss and by every metric."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from seqforge.tasks.base import SequenceTask, check_class_ids, check_label_smoothing, unpack_batch

IGNORE_INDEX = -100


class TaggingTask(SequenceTask):
    """Sequence tagging on batches ``(x, lengths, y)``; ``y`` ``(B, T)`` int64 with ``-100`` on padding.

    Logs ``<stage>/loss``, ``<stage>/acc`` (over real steps), ``<stage>/f1`` (macro) and ``val/acc_best``.
    """

    monitor = "val/acc"
    monitor_mode = "max"

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | Mapping[str, Any] | None = None,
        num_classes: int | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(net, optimizer, scheduler)
        self.num_classes = num_classes or getattr(net, "num_classes", None)
        if not self.num_classes:
            raise ValueError("TaggingTask: num_classes is needed (pass it, or use a net with num_classes)")
        self.label_smoothing = check_label_smoothing("TaggingTask", label_smoothing)
        self.setup_metrics(lambda: {
            "acc": MulticlassAccuracy(self.num_classes, average="micro", ignore_index=IGNORE_INDEX),
            "f1": MulticlassF1Score(self.num_classes, average="macro", ignore_index=IGNORE_INDEX),
        })  # fmt: skip

    def model_step(self, batch: Any) -> dict[str, Any]:
        name = type(self).__name__
        x, lengths, y = unpack_batch(name, batch, ("x", "lengths", "y"))
        check_class_ids(name, "y", y, self.num_classes, IGNORE_INDEX)
        logits = self.net(x, lengths)  # (B, T, C)
        if logits.shape[:2] != y.shape:
            raise ValueError(f"{name}: net returned {tuple(logits.shape)} but labels are {tuple(y.shape)} (B, T)")
        flat_logits, flat_y = logits.reshape(-1, logits.shape[-1]), y.reshape(-1)
        loss = F.cross_entropy(flat_logits, flat_y, ignore_index=IGNORE_INDEX, label_smoothing=self.label_smoothing)
        return {"loss": loss, "preds": flat_logits.argmax(-1), "target": flat_y, "batch_size": y.shape[0]}
