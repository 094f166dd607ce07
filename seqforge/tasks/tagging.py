"""Per-step labelling: padded steps (label ``-100``) are ignored by the loss and by every metric."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F

from seqforge.layers.crf import CRF
from seqforge.tasks.base import check_class_ids, unpack_batch
from seqforge.tasks.classification import ClassificationTask

IGNORE_INDEX = -100


class TaggingTask(ClassificationTask):
    """Sequence tagging on batches ``(x, lengths, y)``; ``y`` ``(B, T)`` int64 with ``-100`` on padding.

    Same arguments as :class:`ClassificationTask`, with one label per step. A net whose ``crf`` is a
    :class:`~seqforge.layers.crf.CRF` (``SequenceTagger(crf=True)``) is trained by the CRF's negative
    log-likelihood and its predictions are Viterbi paths; otherwise per-step cross-entropy and argmax.

    Logs ``<stage>/loss``, ``<stage>/acc`` (over real steps), ``<stage>/f1`` (macro) and ``val/acc_best``.
    """

    ignore_index = IGNORE_INDEX

    def model_step(self, batch: Any) -> dict[str, Any]:
        name = type(self).__name__
        x, lengths, y = unpack_batch(name, batch, ("x", "lengths", "y"))
        check_class_ids(name, "y", y, self.num_classes, IGNORE_INDEX)
        logits = self.net(x, lengths)  # (B, T, C)
        if logits.shape[:2] != y.shape:
            raise ValueError(f"{name}: net returned {tuple(logits.shape)} but labels are {tuple(y.shape)} (B, T)")
        crf = getattr(self.net, "crf", None)
        if isinstance(crf, CRF):
            if self.label_smoothing:
                raise ValueError(f"{name}: label_smoothing={self.label_smoothing} has no meaning with a CRF head")
            loss = crf(logits, y, lengths)
            preds = crf.decode(logits.detach(), lengths).clamp(min=0).reshape(-1)  # padded steps are ignored
            return {"loss": loss, "preds": preds, "target": y.reshape(-1), "batch_size": y.shape[0]}
        flat_logits, flat_y = logits.reshape(-1, logits.shape[-1]), y.reshape(-1)
        loss = F.cross_entropy(flat_logits, flat_y, ignore_index=IGNORE_INDEX, label_smoothing=self.label_smoothing)
        return {"loss": loss, "preds": flat_logits.argmax(-1), "target": flat_y, "batch_size": y.shape[0]}
