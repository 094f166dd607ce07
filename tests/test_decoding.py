"""Samplers and the batched beam search, checked against exhaustive search on a small Markov model."""

from __future__ import annotations

import itertools

import pytest
import torch

from seqforge.models import ConditionalGenerator, LanguageModel, Seq2Seq
from seqforge.models.decoding import beam_search, filter_logits, next_token, sample_decode

PAD, BOS, EOS, V = 0, 1, 2, 5


class ToyModel:
    """Logits depend on the sentence, the step and the previous token: ``table[sentence, step, prev]``.

    The decoding state is ``(sentence id, step)`` per row, so reordering mistakes change the result.
    """

    def __init__(self, batch: int, steps: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.table = 2.5 * torch.randn(batch, steps, V, V, generator=g, dtype=torch.float64)

    def initial(self, sentences: list[int]):
        return torch.tensor(sentences), torch.zeros(len(sentences), dtype=torch.long)

    def step(self, tokens, state):
        sentence, t = state
        return self.table[sentence, t, tokens], (sentence, t + 1)

    @staticmethod
    def reorder(state, index):
        return tuple(s.index_select(0, index) for s in state)

    def logprob(self, sentence: int, seq: list[int]) -> float:
        total, prev = 0.0, BOS
        for t, tok in enumerate(seq):
            total += float(torch.log_softmax(self.table[sentence, t, prev], -1)[tok])
            prev = tok
        return total


def _hypotheses(max_len: int):
    """Every output the decoder can produce: ending with EOS at any length, or cut at ``max_len``."""
    for length in range(1, max_len + 1):
        for body in itertools.product([t for t in range(V) if t != EOS], repeat=length - 1):
            yield [*body, EOS]
    yield from (list(s) for s in itertools.product([t for t in range(V) if t != EOS], repeat=max_len))


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_exhaustive_beam_finds_the_best_hypotheses(alpha):
    max_len = 3
    toy = ToyModel(batch=2, steps=max_len)
    hyps = list(_hypotheses(max_len))
    tokens, lengths, scores = beam_search(
        toy.step, toy.reorder, toy.initial([0, 1]), torch.full((2,), BOS), len(hyps), max_len, EOS, PAD, alpha
    )
    for b in range(2):
        ranked = sorted(
            ((toy.logprob(b, h) / len(h) ** alpha, h) for h in hyps), key=lambda pair: pair[0], reverse=True
        )
        for k in range(5):
            n = int(lengths[b, k])
            assert tokens[b, k, :n].tolist() == ranked[k][1]
            assert float(scores[b, k]) == pytest.approx(ranked[k][0], abs=1e-5)
            assert torch.all(tokens[b, k, n:] == PAD)


def test_batched_beam_equals_one_sentence_at_a_time():
    toy = ToyModel(batch=3, steps=6, seed=1)
    start = torch.full((3,), BOS)
    together = beam_search(toy.step, toy.reorder, toy.initial([0, 1, 2]), start, 3, 6, EOS, PAD, 0.5)
    for b in range(3):
        alone = beam_search(toy.step, toy.reorder, toy.initial([b]), start[:1], 3, 6, EOS, PAD, 0.5)
        width = alone[0].shape[-1]
        assert torch.equal(together[0][b, :, :width], alone[0][0])
        assert torch.all(together[0][b, :, width:] == PAD)
        assert torch.equal(together[1][b], alone[1][0])
        torch.testing.assert_close(together[2][b], alone[2][0])


def test_beam_size_one_equals_greedy_on_the_toy():
    toy = ToyModel(batch=4, steps=7, seed=2)
    start = torch.full((4,), BOS)
    greedy, g_len = sample_decode(toy.step, toy.initial([0, 1, 2, 3]), start, 7, EOS, PAD)
    beam, b_len, _ = beam_search(toy.step, toy.reorder, toy.initial([0, 1, 2, 3]), start, 1, 7, EOS, PAD)
    assert torch.equal(beam[:, 0], greedy) and torch.equal(b_len[:, 0], g_len)


def test_sample_decode_pads_after_eos_and_counts_lengths():
    def step(tokens, t):  # emits 3, 3, EOS for row 0 and 4, EOS for row 1, then junk
        script = torch.tensor([[3, 3, EOS, 4, 4], [4, EOS, 3, 3, 3]])
        logits = torch.full((2, V), -10.0)
        logits[torch.arange(2), script[:, t]] = 10.0
        return logits, t + 1

    tokens, lengths = sample_decode(step, 0, torch.full((2,), BOS), 5, EOS, PAD)
    assert tokens.tolist() == [[3, 3, EOS], [4, EOS, PAD]]
    assert lengths.tolist() == [3, 2]


def test_filters_and_samplers():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isfinite(filter_logits(logits, top_k=2)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, top_p=0.7)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, top_p=0.1)).tolist() == [[True, False, False, False]]
    g = torch.Generator().manual_seed(0)
    rows = logits.expand(20000, -1)
    counts = torch.bincount(next_token(rows, "sample", generator=g), minlength=4) / 20000
    torch.testing.assert_close(counts, torch.tensor([0.5, 0.3, 0.15, 0.05]), atol=0.02, rtol=0)
    sharp = torch.bincount(next_token(rows, "sample", temperature=0.2, generator=g), minlength=4) / 20000
    assert sharp[0] > 0.9
    assert torch.all(next_token(rows[:50], "sample", top_k=1, generator=g) == 0)
    nucleus = next_token(rows, "sample", top_p=0.7, generator=g)
    assert set(nucleus.unique().tolist()) == {0, 1}


def test_decoding_errors_name_the_problem():
    toy = ToyModel(batch=1, steps=3)
    start = torch.full((1,), BOS)
    with pytest.raises(ValueError, match=r"needs an end token \(eos_id\) or a maximum length \(max_len\)"):
        sample_decode(toy.step, toy.initial([0]), start, None, None)
    with pytest.raises(ValueError, match="beam_size must be >= 1"):
        beam_search(toy.step, toy.reorder, toy.initial([0]), start, 0, 3, EOS)
    with pytest.raises(ValueError, match="strategy must be"):
        next_token(torch.zeros(1, 3), "nucleus")
    with pytest.raises(ValueError, match="top_p must be in"):
        filter_logits(torch.zeros(1, 3), top_p=1.5)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        next_token(torch.zeros(1, 3), "sample", temperature=0.0)
    lm = LanguageModel(vocab_size=8, embedding_dim=4, rnn={"hidden_size": 4})
    with pytest.raises(ValueError, match="LanguageModel|needs an end token"):
        lm.generate(torch.tensor([[4]]))
    gen = ConditionalGenerator(output_size=1, num_conditions=2, rnn={"hidden_size": 4})
    with pytest.raises(ValueError, match="ConditionalGenerator: decoding needs an end token"):
        gen.generate(torch.tensor([0]))


# --- the models' decoders --------------------------------------------------------------------------------------


@pytest.mark.parametrize("attention", ["additive", "multihead", "none"])
def test_seq2seq_beam_one_equals_greedy_and_padding_does_not_matter(attention):
    torch.manual_seed(0)
    net = Seq2Seq(10, 9, rnn={"hidden_size": 8}, embedding_dim=6, attention=attention, num_heads=2).eval()
    src = torch.randint(3, 10, (3, 6))
    lengths = torch.tensor([6, 3, 4])
    src[1, 3:] = PAD
    src[2, 4:] = PAD
    greedy, g_len = net.greedy(src, lengths, max_len=8)
    beam, b_len, _ = net.beam_search(src, lengths, beam_size=1, max_len=8)
    assert torch.equal(beam[:, 0], greedy) and torch.equal(b_len[:, 0], g_len)
    beam3, _, _ = net.beam_search(src, lengths, beam_size=3, max_len=8)
    for b in range(3):
        n = int(lengths[b])
        alone, _ = net.greedy(src[b : b + 1, :n], lengths[b : b + 1], max_len=8)
        assert torch.equal(alone[0], greedy[b, : alone.shape[1]])
        alone3, _, _ = net.beam_search(src[b : b + 1, :n], lengths[b : b + 1], beam_size=3, max_len=8)
        assert torch.equal(alone3[0, 0], beam3[b, 0, : alone3.shape[2]])


def test_generator_and_lm_beam_one_equals_greedy():
    torch.manual_seed(0)
    gen = ConditionalGenerator(vocab_size=9, num_conditions=3, rnn={"hidden_size": 8}, embedding_dim=4).eval()
    cond = torch.tensor([0, 1, 2])
    greedy, _ = gen.generate(cond, max_len=6)
    beam, _ = gen.generate(cond, max_len=6, beam_size=1)
    assert torch.equal(greedy, beam)
    lm = LanguageModel(vocab_size=9, embedding_dim=4, rnn={"hidden_size": 8, "cell": "gru"}).eval()
    prompt = torch.randint(3, 9, (2, 3))
    greedy, _ = lm.generate(prompt, max_new_tokens=5)
    beam1 = beam_search(lm._step, lm._reorder, lm(prompt[:, :-1])[1], prompt[:, -1], 1, 5, None)[0][:, 0]
    assert torch.equal(greedy, beam1)
    one_token_prompt, lengths = lm.generate(prompt[:, :1], max_new_tokens=4, beam_size=3)
    assert one_token_prompt.shape == (2, 4) and lengths.tolist() == [4, 4]
