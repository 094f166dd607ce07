"""Entity spans from BIO/BIOES tags and entity-level precision, recall and F1 (the conlleval definition).

An entity counts as correct only if its type and both boundaries match a true entity exactly. Tags are
``O`` or ``<prefix>-<type>`` with prefix ``B``, ``I``, ``E`` or ``S``. Ill-formed sequences are repaired as
conlleval does, never refused: an ``I-`` (or ``E-``) after ``O``, after an entity's end or after another
type starts a new entity (it reads as ``B-``); an entity ends before ``B-``/``S-``/``O``, after ``E-``/``S-``,
or where the type changes.
"""

from __future__ import annotations

from collections.abc import Sequence

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


def entity_scores(true: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict[str, float]:
    """Micro-averaged entity ``precision``, ``recall``, ``f1`` over sentences (0 where undefined).

    Raises:
        ValueError: a different number of sentences, or a sentence whose two tag sequences differ in length.
    """
    if len(true) != len(pred):
        raise ValueError(f"entity_scores: {len(true)} true sentences but {len(pred)} predicted")
    correct = found = wanted = 0
    for i, (t, p) in enumerate(zip(true, pred)):
        if len(t) != len(p):
            raise ValueError(f"entity_scores: sentence {i} has {len(t)} true tags but {len(p)} predicted")
        t_spans, p_spans = entity_spans(t), entity_spans(p)
        correct, found, wanted = correct + len(t_spans & p_spans), found + len(p_spans), wanted + len(t_spans)
    precision = correct / found if found else 0.0
    recall = correct / wanted if wanted else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}
