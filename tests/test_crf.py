"""The CRF against brute-force enumeration of every tag sequence (float64), with lengths respected."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from seqforge import load_from_checkpoint
from seqforge.layers.crf import CRF
from seqforge.models import SequenceTagger
from seqforge.tasks import TaggingTask
from seqforge.train import train
from seqforge.utils.config import compose_config

QUIET = ["extras.print_config=false", "callbacks.rich_progress_bar=null", "callbacks.model_summary=null"]


def brute_force(crf: CRF, emissions: torch.Tensor, length: int) -> tuple[torch.Tensor, list[int]]:
    """Log partition and best path of one sequence by enumerating all num_tags**length paths."""
    scores = {}
    for path in itertools.product(range(crf.num_tags), repeat=length):
        s = crf.start[path[0]] + crf.end[path[-1]] + sum(emissions[t, path[t]] for t in range(length))
        scores[path] = s + sum(crf.transitions[path[t - 1], path[t]] for t in range(1, length))
    stacked = torch.stack(list(scores.values()))
    return torch.logsumexp(stacked, 0), list(max(scores, key=lambda p: float(scores[p].detach())))


@pytest.fixture
def crf() -> CRF:
    torch.manual_seed(0)
    layer = CRF(3).double()
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_()
    return layer


def test_log_partition_score_and_viterbi_match_brute_force_with_lengths(crf: CRF) -> None:
    emissions = torch.randn(4, 5, 3, dtype=torch.float64)
    lengths = torch.tensor([5, 3, 1, 4])
    tags = torch.randint(0, 3, (4, 5))
    log_z, decoded = crf.log_partition(emissions, lengths), crf.decode(emissions, lengths)
    scores = crf.score(emissions, tags, lengths)
    for b, n in enumerate(lengths.tolist()):
        ref_z, ref_path = brute_force(crf, emissions[b], n)
        torch.testing.assert_close(log_z[b], ref_z, rtol=0, atol=1e-10)
        assert decoded[b, :n].tolist() == ref_path and (decoded[b, n:] == -100).all()
        path = tags[b, :n].tolist()
        ref_score = crf.start[path[0]] + crf.end[path[-1]] + sum(emissions[b, t, path[t]] for t in range(n))
        ref_score = ref_score + sum(crf.transitions[path[t - 1], path[t]] for t in range(1, n))
        torch.testing.assert_close(scores[b], ref_score, rtol=0, atol=1e-10)


def test_gradients_of_the_loss_match_brute_force(crf: CRF) -> None:
    emissions = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    lengths, tags = torch.tensor([4, 2]), torch.tensor([[0, 2, 1, 1], [2, 2, 0, 0]])
    loss = crf(emissions, tags, lengths)
    grads = torch.autograd.grad(loss, [emissions, *crf.parameters()])
    ref = 0
    for b, n in enumerate(lengths.tolist()):
        ref = ref + brute_force(crf, emissions[b], n)[0] - crf.score(emissions[b : b + 1], tags[b : b + 1],
                                                                     lengths[b : b + 1])[0]
    ref_grads = torch.autograd.grad(ref / 2, [emissions, *crf.parameters()])
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=0, atol=1e-10)
    assert grads[0][1, 2:].abs().max() == 0  # padded steps get no gradient


def test_padding_values_do_not_change_anything(crf: CRF) -> None:
    emissions = torch.randn(1, 4, 3, dtype=torch.float64)
    changed = emissions.clone()
    changed[0, 2:] = 100.0
    lengths = torch.tensor([2])
    torch.testing.assert_close(crf.log_partition(emissions, lengths), crf.log_partition(changed, lengths))
    assert torch.equal(crf.decode(emissions, lengths), crf.decode(changed, lengths))


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="num_tags must be a positive int"):
        CRF(0)
    with pytest.raises(ValueError, match="emissions have 4 tags"):
        CRF(3).decode(torch.randn(1, 2, 4))
    with pytest.raises(ValueError, match=r"lengths must be \(1,\) in \[1, 2\]"):
        CRF(3).decode(torch.randn(1, 2, 3), torch.tensor([3]))


def test_tagger_with_a_crf_head_trains_and_predicts_viterbi_paths(tmp_path: Path) -> None:
    cfg = compose_config("train", ["+experiment=echo_tagger", "model.net.crf=true", "trainer.max_epochs=3",
                                   "data.num_train=256", "data.num_val=64", "data.num_test=64", *QUIET], tmp_path)
    metrics = train(cfg)
    assert metrics["test/acc"] > 0.5  # 6 tags (5 symbols + start): chance is about 0.2
    task = load_from_checkpoint(metrics["best_ckpt_path"])
    assert isinstance(task.net.crf, CRF) and task.net.crf.transitions.abs().sum() > 0  # trained, restored
    task.datamodule.setup("test")
    x, lengths, y = next(iter(task.datamodule.test_dataloader()))
    with torch.no_grad():
        emissions = task.net(x, lengths)
    out = task.model_step((x, lengths, y))
    assert torch.equal(out["preds"], task.net.crf.decode(emissions, lengths).clamp(min=0).reshape(-1))
    with pytest.raises(ValueError, match="label_smoothing=0.1 has no meaning with a CRF head"):
        TaggingTask(SequenceTagger(num_classes=3, vocab_size=5, crf=True), label_smoothing=0.1).model_step(
            (torch.ones(1, 2, dtype=torch.long), torch.tensor([2]), torch.zeros(1, 2, dtype=torch.long)))
