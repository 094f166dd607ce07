"""Entity spans from BIO/BIOES tags and entity-level precision, recall and F1 (the conlleval definition).

An entity counts as correct only if its type and both boundaries match a true entity exactly. Tags are
``O`` or ``<prefix>-<type>`` with prefix ``B``, ``I``, ``E`` or ``S``. Ill-formed sequences are repaired as
conlleval does, never refused: an ``I-`` (or ``E-``) after ``O``, after an entity's end or after another
type starts a new entity (it reads as ``B-``); an entity ends before ``B-``/``S-``/``O``, after ``E-``/``S-``,
or where the type changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

PREFIXES = ("B", "I", "E", "S")


def split_tag(tag: str) -> tuple[str, str]:
    """``"B-PER"`` -> ``("B", "PER")``; ``"O"`` -> ``("O", "")``."""
    if tag == "O":
        return "O", ""
    prefix, sep, kind = tag.partition("-")
    if not sep or prefix not in PREFIXES or not kind:
        raise ValueError(f"split_tag: expected 'O' or one of {PREFIXES} + '-TYPE' (e.g. 'B-PER'), got {tag!r}")
    return prefix, kind


def _ends(prev: str, prev_kind: str, tag: str, kind: str) -> bool:
    return (prev in ("E", "S") or (prev in ("B", "I") and tag in ("B", "S", "O"))
            or (prev != "O" and prev_kind != kind))  # fmt: skip


def _starts(prev: str, prev_kind: str, tag: str, kind: str) -> bool:
    return (tag in ("B", "S") or (prev in ("E", "S", "O") and tag in ("I", "E"))
            or (tag != "O" and prev_kind != kind))  # fmt: skip


def entity_spans(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """The entities of one tag sequence as ``(type, start, end)`` with ``end`` exclusive."""
    spans, start, prev, prev_kind = set(), -1, "O", ""
    for i, tag in enumerate([*tags, "O"]):
        prefix, kind = split_tag(tag)
        if start >= 0 and _ends(prev, prev_kind, prefix, kind):
            spans.add((prev_kind, start, i))
            start = -1
        if _starts(prev, prev_kind, prefix, kind):
            start = i
        prev, prev_kind = prefix, kind
    return spans


def entity_counts(true: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> tuple[int, int, int]:
    """``(correct, predicted, true)`` entity counts over sentences (see :func:`entity_scores`)."""
    if len(true) != len(pred):
        raise ValueError(f"entity_scores: {len(true)} true sentences but {len(pred)} predicted")
    correct = found = wanted = 0
    for i, (t, p) in enumerate(zip(true, pred)):
        if len(t) != len(p):
            raise ValueError(f"entity_scores: sentence {i} has {len(t)} true tags but {len(p)} predicted")
        t_spans, p_spans = entity_spans(t), entity_spans(p)
        correct, found, wanted = correct + len(t_spans & p_spans), found + len(p_spans), wanted + len(t_spans)
    return correct, found, wanted


def scores_from_counts(correct: float, found: float, wanted: float) -> dict[str, float]:
    """``precision``, ``recall``, ``f1`` from entity counts (0 where undefined)."""
    precision = correct / found if found else 0.0
    recall = correct / wanted if wanted else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def entity_scores(true: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict[str, float]:
    """Micro-averaged entity ``precision``, ``recall``, ``f1`` over sentences (0 where undefined).

    Raises:
        ValueError: a different number of sentences, or a sentence whose two tag sequences differ in length.
    """
    return scores_from_counts(*entity_counts(true, pred))


def is_entity_tag_set(tags: Sequence[object]) -> bool:
    """True when every tag is ``O`` or ``<B|I|E|S>-<type>`` and at least one is not ``O`` (an entity tag set)."""
    try:
        return any(split_tag(t)[0] != "O" for t in tags if isinstance(t, str)) and all(
            isinstance(t, str) and split_tag(t) for t in tags)
    except ValueError:
        return False


class EntityScore(Metric):
    """Entity-level ``precision``, ``recall`` or ``f1`` (``score``) accumulated over batches of tag ids.

    ``update(preds, target)``: ``(B, T)`` int64 tag ids (indices into ``tags``); steps where ``target`` is
    ``ignore_index`` (padding) are dropped from both, so each row is read as one sentence of its true length.
    The counts (correct, predicted and true entities) are summed over batches and processes; ``compute()``
    is :func:`entity_scores` over everything seen.
    """

    full_state_update = False
    higher_is_better = True
    correct: Tensor
    found: Tensor
    wanted: Tensor

    def __init__(self, tags: Sequence[str], score: str = "f1", ignore_index: int = -100, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if score not in ("precision", "recall", "f1"):
            raise ValueError(f"EntityScore: score must be 'precision', 'recall' or 'f1', got {score!r}")
        if not is_entity_tag_set(tags):
            raise ValueError(f"EntityScore: tags must be 'O' or B-/I-/E-/S-<type> tags, got {list(tags)[:10]}")
        self.tags, self.score, self.ignore_index = list(tags), score, ignore_index
        for name in ("correct", "found", "wanted"):
            self.add_state(name, default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        if preds.shape != target.shape or preds.dim() != 2:
            raise ValueError(f"EntityScore: preds and target must both be (B, T) tag ids, got "
                             f"{tuple(preds.shape)} and {tuple(target.shape)}")
        true, pred = [], []
        for p, t in zip(preds.tolist(), target.tolist()):
            keep = [k for k, v in enumerate(t) if v != self.ignore_index]
            true.append([self.tags[t[k]] for k in keep])
            pred.append([self.tags[p[k]] for k in keep])
        counts = entity_counts(true, pred)
        for name, value in zip(("correct", "found", "wanted"), counts):
            setattr(self, name, getattr(self, name) + value)

    def compute(self) -> Tensor:
        counts = (float(self.correct), float(self.found), float(self.wanted))
        return torch.tensor(scores_from_counts(*counts)[self.score])
