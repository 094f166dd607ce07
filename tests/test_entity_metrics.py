"""Entity spans (BIO/BIOES, conlleval repairs) and entity-level F1 on hand-computed cases."""

from __future__ import annotations

import pytest

from seqforge.tasks.entity_metrics import entity_scores, entity_spans


def test_bio_and_bioes_spans() -> None:
    assert entity_spans(["B-PER", "I-PER", "O", "B-LOC", "B-LOC"]) == {("PER", 0, 2), ("LOC", 3, 4), ("LOC", 4, 5)}
    assert entity_spans(["S-PER", "B-ORG", "I-ORG", "E-ORG", "S-ORG"]) == {("PER", 0, 1), ("ORG", 1, 4),
                                                                            ("ORG", 4, 5)}


def test_ill_formed_tags_are_repaired_as_conlleval_does() -> None:
    assert entity_spans(["O", "I-PER", "I-PER"]) == {("PER", 1, 3)}  # I- after O starts an entity
    assert entity_spans(["B-PER", "I-LOC"]) == {("PER", 0, 1), ("LOC", 1, 2)}  # a type change starts one
    assert entity_spans(["E-PER", "I-PER"]) == {("PER", 0, 1), ("PER", 1, 2)}  # after an end, I- starts one
    with pytest.raises(ValueError, match=r"got 'X-PER'"):
        entity_spans(["X-PER"])


def test_entity_scores_need_type_and_both_boundaries() -> None:
    true = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "O", "O", "B-LOC"], ["B-MISC", "O"]]  # PER boundary wrong, ORG type wrong, LOC right
    scores = entity_scores(true, pred)
    assert scores["precision"] == pytest.approx(1 / 3) and scores["recall"] == pytest.approx(1 / 3)
    assert scores["f1"] == pytest.approx(1 / 3)
    assert entity_scores([["O"]], [["O"]]) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert entity_scores([["B-A", "O"]], [["B-A", "B-A"]]) == pytest.approx({"precision": 0.5, "recall": 1.0,
                                                                            "f1": 2 / 3})
    with pytest.raises(ValueError, match="sentence 0 has 1 true tags but 2 predicted"):
        entity_scores([["O"]], [["O", "O"]])
