"""Per-step labelling: padded steps (label ``-100``) are ignored by the loss and by every metric."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torchmetrics import MetricCollection

from seqforge.layers.crf import CRF
from seqforge.tasks.base import check_class_ids, datamodule_attr, unpack_batch
from seqforge.tasks.classification import ClassificationTask
from seqforge.tasks.entity_metrics import EntityScore, is_entity_tag_set

IGNORE_INDEX = -100
ENTITY_SCORES = ("precision", "recall", "f1")


class TaggingTask(ClassificationTask):
    """Sequence tagging on batches ``(x, lengths, y)``; ``y`` ``(B, T)`` int64 with ``-100`` on padding.

    Same arguments as :class:`ClassificationTask`, with one label per step. A net whose ``crf`` is a
    :class:`~seqforge.layers.crf.CRF` (``SequenceTagger(crf=True)``) is trained by the CRF's negative
    log-likelihood and its predictions are Viterbi paths; otherwise per-step cross-entropy and argmax.

    Logs ``<stage>/loss``, ``<stage>/acc`` (over real steps), ``<stage>/f1`` (macro over tags) and
    ``val/acc_best``. When the datamodule names its tags (``datamodule.tags``) and they are an entity tag set
    (``O`` and ``B-``/``I-``/``E-``/``S-<type>``), validation and test also log entity-level
    ``<stage>/entity_precision``, ``<stage>/entity_recall`` and ``<stage>/entity_f1`` (the conlleval
    definition, :mod:`seqforge.tasks.entity_metrics`), which then also land in the run's ``metrics.json``.
    """

    ignore_index = IGNORE_INDEX
    entity_metrics: dict[str, MetricCollection]  # stage -> entity scores, built by setup() from the data's tags

    def setup(self, stage: str) -> None:
        tags = datamodule_attr(self, "tags")
        if tags is None or not is_entity_tag_set(tags) or len(tags) != self.num_classes:
            self.entity_metrics = {}
            return
        for split in ("val", "test"):  # registered as submodules, so they move with the task's device
            collection = MetricCollection({f"entity_{score}": EntityScore(tags, score, IGNORE_INDEX)
                                           for score in ENTITY_SCORES}, compute_groups=False)  # fmt: skip
            setattr(self, f"{split}_entity_metrics", collection)
        self.entity_metrics = {split: getattr(self, f"{split}_entity_metrics") for split in ("val", "test")}

    def update_metrics(self, stage: str, out: dict[str, Any]) -> None:
        """Per-step metrics as in the base; for val/test with an entity tag set, also update and log the entity
        scores from the ``(B, T)`` tag ids of the batch."""
        super().update_metrics(stage, out)
        collection = getattr(self, "entity_metrics", {}).get(stage)
        if collection is None:
            return
        collection.update(out["tag_ids"], out["tag_target"])
        for name, metric in collection.items():
            self.log(f"{stage}/{name}", metric, on_step=False, on_epoch=True, prog_bar=name == "entity_f1")

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
            tag_ids = crf.decode(logits.detach(), lengths).clamp(min=0)  # (B, T); padded steps are ignored
            return {"loss": loss, "preds": tag_ids.reshape(-1), "target": y.reshape(-1), "batch_size": y.shape[0],
                    "tag_ids": tag_ids, "tag_target": y}  # fmt: skip
        flat_logits, flat_y = logits.reshape(-1, logits.shape[-1]), y.reshape(-1)
        loss = F.cross_entropy(flat_logits, flat_y, ignore_index=IGNORE_INDEX, label_smoothing=self.label_smoothing)
        tag_ids = logits.detach().argmax(-1)  # (B, T)
        return {"loss": loss, "preds": tag_ids.reshape(-1), "target": flat_y, "batch_size": y.shape[0],
                "tag_ids": tag_ids, "tag_target": y}  # fmt: skip
