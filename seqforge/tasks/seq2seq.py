"""Sequence-to-sequence training: teacher forcing with a schedule, decoding metrics, attention pictures."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.text import CharErrorRate, WordErrorRate

from seqforge.tasks.base import SequenceTask, check_label_smoothing, datamodule_attr, unpack_batch
from seqforge.tasks.plots import attention_figure

if TYPE_CHECKING:
    from seqforge.models.seq2seq import Seq2Seq

SCHEDULES = ("constant", "linear", "inverse_sigmoid")


def teacher_forcing_ratio(schedule: str, step: int, start: float, end: float, steps: int) -> float:
    """Probability of feeding the gold token at training ``step`` (scheduled sampling, Bengio et al. 2015).

    ``constant``: ``start``; ``linear``: from ``start`` down to ``end`` over ``steps`` steps;
    ``inverse_sigmoid``: ``end + (start - end) * k / (k + exp(step / k))`` with ``k = steps``.
    """
    if schedule == "constant":
        return start
    if schedule == "linear":
        return max(end, start - (start - end) * step / steps)
    if schedule == "inverse_sigmoid":
        k = float(steps)
        return end + (start - end) * k / (k + math.exp(min(step / k, 700.0)))
    raise ValueError(f"teacher_forcing_ratio: schedule must be one of {SCHEDULES}, got {schedule!r}")


def strip_after_eos(tokens: Sequence[int], eos_id: int, pad_id: int) -> list[int]:
    """The ids before the first ``eos_id``, without padding."""
    out = []
    for token in tokens:
        if token == eos_id:
            break
        if token != pad_id:
            out.append(token)
    return out


class Seq2SeqTask(SequenceTask):
    """Seq2seq on batches ``(src, src_lengths, tgt, tgt_lengths)``; ``tgt`` is ``BOS ... EOS`` padded.

    The net is a :class:`seqforge.models.Seq2Seq` (or any module with its ``forward``/``generate`` and
    ``pad_id``/``eos_id``/``tgt_vocab_size`` attributes).

    Args:
        teacher_forcing: ``"constant" | "linear" | "inverse_sigmoid"`` schedule of the teacher-forcing ratio,
            from ``teacher_forcing_start`` to ``teacher_forcing_end`` over ``teacher_forcing_steps`` steps.
        beam_size, length_penalty, max_decode_len: decoding used for the validation/test metrics.
        label_smoothing: cross-entropy label smoothing.
        num_attention_images: validation examples whose attention maps go to the loggers each epoch.

    Metrics: ``token_acc`` (teacher-forced), and on val/test from decoding: ``exact_match``, ``cer``,
    ``wer``. Texts for CER/WER come from the datamodule's ``decode(ids) -> str`` when it has one, else
    from its ``tgt_vocab`` (a :class:`seqforge.data.Vocabulary`; tokens joined by spaces, so WER is the
    token error rate), else from the ids joined by spaces. Monitors ``val/exact_match`` (max).
    """

    monitor = "val/exact_match"
    monitor_mode = "max"
    net: Seq2Seq  # or a module with the same interface

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | Mapping[str, Any] | None = None,
        teacher_forcing: str = "constant",
        teacher_forcing_start: float = 1.0,
        teacher_forcing_end: float = 0.0,
        teacher_forcing_steps: int = 1000,
        beam_size: int = 1,
        length_penalty: float = 0.0,
        max_decode_len: int | None = None,
        label_smoothing: float = 0.0,
        num_attention_images: int = 2,
    ) -> None:
        super().__init__(net, optimizer, scheduler)
        if teacher_forcing not in SCHEDULES:
            raise ValueError(f"Seq2SeqTask: teacher_forcing must be one of {SCHEDULES}, got {teacher_forcing!r}")
        if teacher_forcing_steps < 1:
            raise ValueError(f"Seq2SeqTask: teacher_forcing_steps must be >= 1, got {teacher_forcing_steps}")
        check_label_smoothing("Seq2SeqTask", label_smoothing)
        for name in ("tgt_vocab_size", "pad_id", "eos_id"):
            if not hasattr(net, name):
                raise TypeError(f"Seq2SeqTask: net must have a {name} attribute (a seqforge.models.Seq2Seq)")
        vocab, pad = self.net.tgt_vocab_size, self.net.pad_id
        self.setup_metrics(lambda: {"token_acc": MulticlassAccuracy(vocab, average="micro", ignore_index=pad)})
        for stage in ("val", "test"):
            metrics = self.metrics(stage)
            metrics.add_metrics({"exact_match": MeanMetric(), "cer": CharErrorRate(), "wer": WordErrorRate()})

    def current_teacher_forcing(self) -> float:
        hp = self.hparams
        return teacher_forcing_ratio(
            hp.teacher_forcing, self.global_step, hp.teacher_forcing_start, hp.teacher_forcing_end,
            hp.teacher_forcing_steps,
        )  # fmt: skip

    def model_step(self, batch: Any) -> dict[str, Any]:
        names = ("src", "src_lengths", "tgt", "tgt_lengths")
        src, src_lengths, tgt, _ = unpack_batch(type(self).__name__, batch, names)
        if tgt.dim() != 2 or tgt.shape[1] < 2:
            raise ValueError(f"Seq2SeqTask: tgt must be (B, L) with L >= 2 (BOS ... EOS), got {tuple(tgt.shape)}")
        tgt_in, tgt_out = tgt[:, :-1], tgt[:, 1:]
        ratio = self.current_teacher_forcing() if self.training else 1.0
        logits, attn = self.net(src, src_lengths, tgt_in, teacher_forcing_ratio=ratio)  # (B, T, V), (B, T, S)
        if self.training:
            self.log("train/teacher_forcing", ratio, on_step=True, on_epoch=False)
        pad = self.net.pad_id
        flat = logits.reshape(-1, logits.shape[-1])
        loss = F.cross_entropy(
            flat, tgt_out.reshape(-1), ignore_index=pad, label_smoothing=self.hparams.label_smoothing
        )
        return {
            "loss": loss, "preds": flat.argmax(-1), "target": tgt_out.reshape(-1), "batch_size": src.shape[0],
            "src": src, "src_lengths": src_lengths, "tgt_out": tgt_out, "attn": attn,
        }  # fmt: skip

    def text(self, ids: Sequence[int]) -> str:
        """The output as text: ``datamodule.decode(ids)``, else its ``tgt_vocab`` tokens, else the ids."""
        ids = strip_after_eos([int(i) for i in ids], self.net.eos_id, self.net.pad_id)
        decode, vocab = datamodule_attr(self, "decode"), datamodule_attr(self, "tgt_vocab")
        if callable(decode):
            return decode(ids)
        tokens = vocab.decode(ids) if vocab is not None else [str(i) for i in ids]
        return " ".join(tokens)

    def token_labels(self, ids: Sequence[int], vocab_name: str) -> list[str]:
        """Axis labels: the datamodule's ``src_vocab``/``tgt_vocab`` tokens when it has them, else the ids."""
        itos = getattr(datamodule_attr(self, vocab_name), "itos", None)
        return [itos[i] if itos is not None and 0 <= i < len(itos) else str(i) for i in ids]

    def update_metrics(self, stage: str, out: dict[str, Any]) -> None:
        metrics = self.metrics(stage)
        metrics["token_acc"].update(out["preds"], out["target"])
        if stage == "train":
            return
        hp = self.hparams
        decoded, _ = self.net.generate(
            out["src"], out["src_lengths"], beam_size=hp.beam_size, max_len=hp.max_decode_len,
            length_penalty=hp.length_penalty,
        )  # fmt: skip
        pred_texts = [self.text(row) for row in decoded.tolist()]
        gold_texts = [self.text(row) for row in out["tgt_out"].tolist()]
        gold_ids = [strip_after_eos(row, self.net.eos_id, self.net.pad_id) for row in out["tgt_out"].tolist()]
        pred_ids = [strip_after_eos(row, self.net.eos_id, self.net.pad_id) for row in decoded.tolist()]
        matches = [float(p == g) for p, g in zip(pred_ids, gold_ids)]
        metrics["exact_match"].update(torch.tensor(matches, device=decoded.device))
        metrics["cer"].update(pred_texts, gold_texts)
        metrics["wer"].update(pred_texts, gold_texts)

    def keep_examples(self, batch: Any, out: dict[str, Any]) -> None:
        k = self.hparams.num_attention_images
        self.examples = None
        if k > 0 and out["attn"] is not None:
            self.examples = {
                "attn": out["attn"][:k].detach().cpu(), "src": out["src"][:k].cpu(),
                "src_lengths": out["src_lengths"][:k].cpu(), "tgt_out": out["tgt_out"][:k].cpu(),
            }  # fmt: skip

    def log_pictures(self, writer: Any, examples: dict[str, Tensor]) -> None:
        for i in range(examples["attn"].shape[0]):
            s = int(examples["src_lengths"][i])
            tgt = strip_after_eos(examples["tgt_out"][i].tolist(), self.net.eos_id, self.net.pad_id)
            t = len(tgt) + 1  # the EOS step too
            weights = examples["attn"][i, :t, :s].numpy()
            source = self.token_labels(examples["src"][i, :s].tolist(), "src_vocab")
            target = self.token_labels(tgt, "tgt_vocab") + ["</s>"]
            fig = attention_figure(weights, source, target, title=f"example {i}")
            writer.add_figure(f"val/attention_{i}", fig, global_step=self.global_step)
