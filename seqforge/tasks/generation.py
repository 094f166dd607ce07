"""One-to-many training: teacher forcing on ``(cond, y, y_lengths)`` batches, samples logged each epoch."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanSquaredError
from torchmetrics.classification import MulticlassAccuracy

from seqforge.layers.attention import length_mask
from seqforge.tasks.base import SequenceTask, unpack_batch
from seqforge.tasks.plots import curves_figure

if TYPE_CHECKING:
    from seqforge.models.one_to_many import ConditionalGenerator


class GenerationTask(SequenceTask):
    """Conditional generation with a :class:`seqforge.models.ConditionalGenerator`.

    Token outputs: ``y`` ``(B, T)`` is ``BOS ... EOS`` padded with ``pad_id``; the loss is cross-entropy
    of ``y[:, 1:]`` given ``y[:, :-1]`` and ``token_acc`` is logged. Real outputs: ``y`` ``(B, T, F)``;
    the input is ``y`` shifted right behind a zero frame, the loss is MSE (or Gaussian NLL for a Gaussian
    head) over the first ``y_lengths`` steps, and ``mse`` is logged.

    Args:
        num_samples: conditions of the first validation batch whose generations go to the loggers.
        sample_len: maximum length of those generations (default: the batch's length).
    """

    monitor = "val/loss"
    monitor_mode = "min"
    net: ConditionalGenerator

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | Mapping[str, Any] | None = None,
        num_samples: int = 4,
        sample_len: int | None = None,
    ) -> None:
        super().__init__(net, optimizer, scheduler)
        if not hasattr(net, "is_token"):
            raise TypeError("GenerationTask: net must be a seqforge.models.ConditionalGenerator")
        self.is_token = net.is_token
        if self.is_token:
            vocab, pad = self.net.vocab_size, self.net.pad_id
            self.setup_metrics(lambda: {"token_acc": MulticlassAccuracy(vocab, average="micro", ignore_index=pad)})
        else:
            self.setup_metrics(lambda: {"mse": MeanSquaredError()})

    def model_step(self, batch: Any) -> dict[str, Any]:
        name = type(self).__name__
        cond, y, y_lengths = unpack_batch(name, batch, ("cond", "y", "y_lengths"))
        if self.is_token:
            if y.dim() != 2 or y.shape[1] < 2:
                raise ValueError(f"{name}: token targets must be (B, L) with L >= 2, got {tuple(y.shape)}")
            logits = self.net(cond, y[:, :-1])  # (B, T-1, V)
            flat, target = logits.reshape(-1, logits.shape[-1]), y[:, 1:].reshape(-1)
            loss = F.cross_entropy(flat, target, ignore_index=self.net.pad_id)
            return {"loss": loss, "preds": flat.argmax(-1), "target": target, "batch_size": y.shape[0], "cond": cond}
        if y.dim() != 3:
            raise ValueError(f"{name}: real-valued targets must be (B, T, F), got {tuple(y.shape)}")
        y_in = torch.cat([y.new_zeros(y.shape[0], 1, y.shape[2]), y[:, :-1]], dim=1)
        out = self.net(cond, y_in)
        mean = out[0] if isinstance(out, tuple) else out
        mask = length_mask(y_lengths.to(y.device), y.shape[1])  # (B, T)
        if isinstance(out, tuple):
            per_step = F.gaussian_nll_loss(mean, y, out[1], reduction="none")
        else:
            per_step = (mean - y) ** 2
        loss = per_step[mask].mean()
        return {"loss": loss, "preds": mean[mask].detach(), "target": y[mask], "batch_size": y.shape[0], "cond": cond}

    def keep_examples(self, batch: Any, out: dict[str, Any]) -> None:
        self.examples = out["cond"][: self.hparams.num_samples] if self.hparams.num_samples > 0 else None
        self.example_len = self.hparams.sample_len or batch[1].shape[1]

    def log_pictures(self, writer: Any, cond: Tensor) -> None:
        generated, lengths = self.net.generate(cond, max_len=self.example_len)
        labels = [str(c.tolist()) for c in cond.cpu()]
        if self.is_token:
            lines = [f"cond {label}: {row[:n].tolist()}" for label, row, n in zip(labels, generated.cpu(), lengths)]
            writer.add_text("val/samples", "  \n".join(lines), global_step=self.global_step)
        else:
            fig = curves_figure([g[:, 0].numpy() for g in generated.cpu()], labels, title="generated")
            writer.add_figure("val/samples", fig, global_step=self.global_step)
