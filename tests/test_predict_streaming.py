"""Streaming inference: ``init_state(batch_size)`` and ``step(x_t, state) -> (y_t, state)`` on the unidirectional
models equal the full-sequence forward fed the same steps, in float64 to 1e-10."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from seqforge.models import ConditionalGenerator, Forecaster, LanguageModel, SequenceClassifier, SequenceTagger

TOL = 1e-10
B, T = 3, 6


def stream(net: nn.Module, x: Tensor) -> list[Tensor]:
    """``net.step`` over the time axis of ``x`` (B, T[, C]) from ``net.init_state``: one output per step."""
    state = net.init_state(x.shape[0])
    outputs = []
    for t in range(x.shape[1]):
        y, state = net.step(x[:, t], state)
        outputs.append(y)
    return outputs


def features(channels: int) -> Tensor:
    return torch.randn(B, T, channels, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_classifier_and_tagger_stream_like_the_full_forward(cell: str) -> None:
    torch.manual_seed(0)
    rnn = {"cell": cell, "hidden_size": 5, "num_layers": 2}
    classifier = SequenceClassifier(num_classes=4, input_size=3, rnn=rnn).double().eval()
    x = features(3)
    for t, y in enumerate(stream(classifier, x)):  # the prediction on the prefix read so far
        torch.testing.assert_close(y, classifier(x[:, : t + 1]), atol=TOL, rtol=0)
    tagger = SequenceTagger(num_classes=4, vocab_size=9, rnn={**rnn, "bidirectional": False}).double().eval()
    ids = torch.randint(1, 9, (B, T))
    torch.testing.assert_close(torch.stack(stream(tagger, ids), dim=1), tagger(ids), atol=TOL, rtol=0)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_language_model_and_forecaster_stream_like_the_full_forward(cell: str) -> None:
    torch.manual_seed(0)
    lm = LanguageModel(vocab_size=11, embedding_dim=4, rnn={"cell": cell, "hidden_size": 6, "num_layers": 2})
    lm = lm.double().eval()
    ids = torch.randint(0, 11, (B, T))
    torch.testing.assert_close(torch.stack(stream(lm, ids), dim=1), lm(ids)[0], atol=TOL, rtol=0)
    forecaster = Forecaster(input_size=2, horizon=3, rnn={"cell": cell, "hidden_size": 5}, head="gaussian")
    forecaster = forecaster.double().eval()
    x = features(2)
    for t, y in enumerate(stream(forecaster, x)):
        torch.testing.assert_close(y, forecaster(x[:, : t + 1]), atol=TOL, rtol=0)


@pytest.mark.parametrize("cell", ["lstm", "gru", "helpers.cells.PeepholeLSTMCell"])
@pytest.mark.parametrize("condition", ["init", "input", "both"])
def test_generator_streams_like_its_teacher_forced_forward(cell: str, condition: str) -> None:
    torch.manual_seed(0)
    if cell.startswith("helpers."):
        import helpers.cells

        cell = helpers.cells.PeepholeLSTMCell  # type: ignore[assignment]
    rnn = {"cell": cell, "hidden_size": 5, "num_layers": 2}
    tokens = ConditionalGenerator(vocab_size=9, num_conditions=3, rnn=rnn, embedding_dim=4, condition=condition)
    tokens = tokens.double().eval()
    cond, y_in = torch.tensor([0, 2, 1]), torch.randint(0, 9, (B, T))
    state = tokens.init_state(B, cond)
    for t in range(T):
        y, state = tokens.step(y_in[:, t], state)
        torch.testing.assert_close(y, tokens(cond, y_in)[:, t], atol=TOL, rtol=0)
    values = ConditionalGenerator(output_size=2, cond_size=3, rnn=rnn, output_head="gaussian", condition=condition)
    values = values.double().eval()
    cond_x, x = features(3)[:, 0], features(2)
    state = values.init_state(B, cond_x)
    mean, var = values(cond_x, x)
    for t in range(T):
        (mean_t, var_t), state = values.step(x[:, t], state)
        torch.testing.assert_close(mean_t, mean[:, t], atol=TOL, rtol=0)
        torch.testing.assert_close(var_t, var[:, t], atol=TOL, rtol=0)


def test_generator_streaming_checks_its_inputs() -> None:
    net = ConditionalGenerator(vocab_size=9, num_conditions=3, rnn={"hidden_size": 4})
    with pytest.raises(ValueError, match=r"cond must have batch_size=2 rows, got shape \(3,\)"):
        net.init_state(2, torch.tensor([0, 1, 2]))
    state = net.init_state(2, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"y_t must be \(B,\) token ids, got shape \(2, 1\)"):
        net.step(torch.zeros(2, 1, dtype=torch.long), state)
    with pytest.raises(ValueError, match=r"cond has batch 2 but y_t has batch 3"):
        net.step(torch.zeros(3, dtype=torch.long), state)
    with pytest.raises(ValueError, match=r"y_t ids must lie in \[0, 9\)"):
        net.step(torch.tensor([1, 9]), state)


def test_models_without_a_streaming_form_say_which_option() -> None:
    x_t = torch.randn(2, 3)
    bidirectional = SequenceClassifier(num_classes=2, input_size=3, rnn={"hidden_size": 4, "bidirectional": True})
    with pytest.raises(ValueError, match="bidirectional.*train it with bidirectional=false"):
        bidirectional.step(x_t, bidirectional.init_state(2))
    pooled = SequenceClassifier(num_classes=2, input_size=3, rnn={"hidden_size": 4}, pooling="mean")
    with pytest.raises(ValueError, match="step\\(\\) needs pooling='last', got pooling='mean'"):
        pooled.step(x_t, pooled.init_state(2))
    seasonal = Forecaster(input_size=3, horizon=2, rnn={"hidden_size": 4}, season=4)
    with pytest.raises(ValueError, match="step\\(\\) needs season=None, got 4"):
        seasonal.step(x_t, seasonal.init_state(2))
    with pytest.raises(ValueError, match="expected float features \\(B, T, 3\\)"):
        pooled.encoder.step(torch.randn(2, 5), None)
