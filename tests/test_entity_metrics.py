"""Entity spans (BIO/BIOES, conlleval repairs) and entity-level F1 on hand-computed cases."""

from __future__ import annotations

import pytest
import torch

from seqforge.tasks.entity_metrics import EntityScore, entity_scores, entity_spans, is_entity_tag_set


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


def test_entity_score_metric_over_padded_batches_equals_entity_scores() -> None:
    tags = ["B-LOC", "B-PER", "I-PER", "O"]
    true = [["B-PER", "I-PER", "O", "B-LOC"], ["B-PER", "O"], ["O", "B-LOC", "O"]]
    pred = [["B-PER", "O", "O", "B-LOC"], ["B-PER", "O"], ["B-LOC", "B-LOC", "O"]]

    def ids(rows: list[list[str]], pad: int) -> torch.Tensor:
        return torch.tensor([[tags.index(t) for t in r] + [pad] * (4 - len(r)) for r in rows])

    metrics = {score: EntityScore(tags, score) for score in ("precision", "recall", "f1")}
    for metric in metrics.values():  # two batches; padded predictions hold junk ids that must not count
        metric.update(ids(pred[:2], 1), ids(true[:2], -100))
        metric.update(ids(pred[2:], 2), ids(true[2:], -100))
    expected = entity_scores(true, pred)  # 3 correct of 5 predicted and 4 true entities
    assert expected == pytest.approx({"precision": 0.6, "recall": 0.75, "f1": 2 / 3})
    for score, metric in metrics.items():
        assert float(metric.compute()) == pytest.approx(expected[score])
    with pytest.raises(ValueError, match="tags must be 'O' or B-/I-/E-/S-<type> tags, got"):
        EntityScore(["NN", "VB"])
    with pytest.raises(ValueError, match=r"must both be \(B, T\) tag ids, got \(2,\) and \(2, 1\)"):
        metrics["f1"].update(torch.zeros(2, dtype=torch.long), torch.zeros(2, 1, dtype=torch.long))
    assert is_entity_tag_set(["O", "S-X"]) and not is_entity_tag_set(["O"]) and not is_entity_tag_set(["DT", "O"])
