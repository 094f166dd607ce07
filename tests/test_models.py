"""The plain nn.Module models: shapes, length handling, consistency between paths, clear errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import seqforge
import seqforge.layers
import seqforge.models
from seqforge.models import (
    ConditionalGenerator,
    Forecaster,
    LanguageModel,
    Seq2Seq,
    SequenceClassifier,
    SequenceTagger,
)

CELLS = ["rnn", "rnn_relu", "lstm", "gru"]


def _padded_batch(vocab: int | None = None, feats: int = 3):
    torch.manual_seed(0)
    lengths = torch.tensor([7, 4, 1])
    if vocab is None:
        x = torch.randn(3, 7, feats)
        for b, n in enumerate(lengths.tolist()):
            x[b, n:] = 0.0
    else:
        x = torch.randint(4, vocab, (3, 7))
        for b, n in enumerate(lengths.tolist()):
            x[b, n:] = 0
    return x, lengths


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("pooling", ["last", "mean", "max", "attention"])
def test_classifier_pooling_ignores_padding(cell, pooling):
    rnn = {"hidden_size": 6, "cell": cell, "bidirectional": True, "num_layers": 2}
    net = SequenceClassifier(num_classes=4, input_size=3, rnn=rnn, pooling=pooling).eval()
    x, lengths = _padded_batch()
    out = net(x, lengths)
    assert out.shape == (3, 4)
    for b, n in enumerate(lengths.tolist()):
        alone = net(x[b : b + 1, :n], lengths[b : b + 1])
        torch.testing.assert_close(out[b : b + 1], alone, rtol=1e-5, atol=1e-6)
    garbage = x.clone()
    garbage[1, 4:] = 100.0
    torch.testing.assert_close(net(garbage, lengths), out, rtol=1e-5, atol=1e-6)


def test_classifier_tokens_regression_and_options():
    x, lengths = _padded_batch(vocab=10)
    rnn = {"hidden_size": 6, "cell": "gru", "dropout": 0.1}
    net = SequenceClassifier(output_size=2, vocab_size=10, embedding_dim=5, rnn=rnn)
    assert net(x, lengths).shape == (3, 2)
    assert net.encoder.embedding.padding_idx == 0
    layer_norm = SequenceClassifier(num_classes=3, input_size=3, rnn={"hidden_size": 6, "layer_norm": True})
    assert layer_norm(torch.randn(2, 5, 3)).shape == (2, 3)


def test_classifier_input_noise_only_while_training():
    torch.manual_seed(0)
    plain = SequenceClassifier(num_classes=3, input_size=3, rnn={"hidden_size": 6})
    noisy = SequenceClassifier(num_classes=3, input_size=3, rnn={"hidden_size": 6}, input_noise=0.5)
    noisy.load_state_dict(plain.state_dict())
    x, lengths = _padded_batch()
    torch.testing.assert_close(noisy.eval()(x, lengths), plain.eval()(x, lengths))
    noisy.train()
    assert not torch.allclose(noisy(x, lengths), plain.train()(x, lengths), atol=1e-3)
    with pytest.raises(ValueError, match="input_noise must be a standard deviation >= 0, got -0.1"):
        SequenceClassifier(num_classes=3, input_size=3, input_noise=-0.1)
    with pytest.raises(ValueError, match="input_noise=0.1 needs float features"):
        SequenceClassifier(num_classes=3, vocab_size=5, input_noise=0.1)


def test_tagger_per_step_logits_ignore_padding():
    net = SequenceTagger(num_classes=5, vocab_size=10, embedding_dim=4, rnn={"hidden_size": 6, "cell": "lstm"}).eval()
    x, lengths = _padded_batch(vocab=10)
    out = net(x, lengths)
    assert out.shape == (3, 7, 5)
    for b, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(out[b, :n], net(x[b : b + 1, :n], lengths[b : b + 1])[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("attention", ["additive", "dot", "general", "multihead", "none"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_seq2seq_teacher_forcing_matches_stepwise_decoding(attention, cell):
    torch.manual_seed(0)
    net = Seq2Seq(10, 8, rnn={"hidden_size": 8, "cell": cell, "num_layers": 2}, embedding_dim=6, attention=attention,
                  num_heads=2).eval()
    src, lengths = _padded_batch(vocab=10)
    tgt_in = torch.randint(3, 8, (3, 5))
    tgt_in[:, 0] = net.bos_id
    logits, attn = net(src, lengths, tgt_in)
    assert logits.shape == (3, 5, 8)
    state = net.encode(src, lengths)
    for t in range(5):
        step_logits, state = net.decode_step(tgt_in[:, t], state)
        torch.testing.assert_close(step_logits, logits[:, t], rtol=1e-5, atol=1e-6)
    if attention == "none":
        assert attn is None
        return
    assert attn.shape == (3, 5, 7)
    mask = torch.arange(7) < lengths[:, None]
    assert torch.all(attn.masked_select(~mask[:, None, :]) == 0)
    torch.testing.assert_close(attn.sum(-1), torch.ones(3, 5))


def test_seq2seq_scheduled_sampling_changes_inputs_only_below_one():
    torch.manual_seed(0)
    net = Seq2Seq(10, 8, rnn={"hidden_size": 8}, embedding_dim=6).eval()
    src, lengths = _padded_batch(vocab=10)
    tgt_in = torch.randint(3, 8, (3, 6))
    full, _ = net(src, lengths, tgt_in, teacher_forcing_ratio=1.0)
    torch.manual_seed(1)
    free, _ = net(src, lengths, tgt_in, teacher_forcing_ratio=0.0)
    greedy_in = torch.cat([tgt_in[:, :1], free[:, :-1].argmax(-1)], dim=1)
    torch.testing.assert_close(free, net(src, lengths, greedy_in)[0])  # ratio 0 feeds its own predictions
    torch.testing.assert_close(full[:, 0], free[:, 0])


def test_seq2seq_generate_shapes_and_zero_bridge():
    net = Seq2Seq(10, 8, rnn={"hidden_size": 8, "bidirectional": False}, embedding_dim=6, bridge="zero")
    src, lengths = _padded_batch(vocab=10)
    tokens, out_lengths = net.generate(src, lengths, beam_size=2, max_len=5)
    assert tokens.shape[0] == 3 and tokens.shape[1] <= 5 and out_lengths.shape == (3,)
    assert int(out_lengths.max()) <= 5


@pytest.mark.parametrize("condition", ["init", "input", "both"])
def test_generator_teacher_forcing_matches_stepwise(condition):
    torch.manual_seed(0)
    net = ConditionalGenerator(vocab_size=9, num_conditions=3, rnn={"hidden_size": 8, "cell": "gru"}, embedding_dim=4,
                               cond_embedding_dim=5, condition=condition).eval()  # fmt: skip
    cond, y_in = torch.tensor([0, 2]), torch.randint(3, 9, (2, 5))
    logits = net(cond, y_in)
    c = net.encode_condition(cond)
    state = {"cond": c, "hidden": net.initial_state(c)}
    for t in range(5):
        step, state = net.decode_step(y_in[:, t], state)
        torch.testing.assert_close(step, logits[:, t], rtol=1e-5, atol=1e-6)


def test_generator_real_valued_heads():
    net = ConditionalGenerator(output_size=2, cond_size=3, rnn={"hidden_size": 8}, output_head="gaussian")
    mean, var = net(torch.randn(4, 3), torch.randn(4, 6, 2))
    assert mean.shape == var.shape == (4, 6, 2) and bool((var > 0).all())
    values, lengths = net.generate(torch.randn(4, 3), max_len=5, strategy="sample")
    assert values.shape == (4, 5, 2) and lengths.tolist() == [5] * 4
    mse = ConditionalGenerator(output_size=2, num_conditions=2, rnn={"hidden_size": 8})
    assert mse(torch.tensor([0, 1]), torch.randn(2, 3, 2)).shape == (2, 3, 2)
    with pytest.raises(ValueError, match="'sample' with output_head='gaussian'"):
        mse.generate(torch.tensor([0, 1]), max_len=3, strategy="sample")
    with pytest.raises(ValueError, match="beam search needs token outputs"):
        mse.generate(torch.tensor([0, 1]), max_len=3, beam_size=2)


def test_lm_weight_tying_and_state_carry():
    lm = LanguageModel(vocab_size=12, embedding_dim=6, rnn={"hidden_size": 10, "num_layers": 2}).eval()
    assert lm.decoder.weight is lm.embedding.weight
    x = torch.randint(0, 12, (2, 8))
    whole, _ = lm(x)
    first, state = lm(x[:, :5])
    second, _ = lm(x[:, 5:], state)
    torch.testing.assert_close(torch.cat([first, second], 1), whole, rtol=1e-5, atol=1e-6)
    untied = LanguageModel(vocab_size=12, embedding_dim=6, rnn={"hidden_size": 10}, tie_weights=False)
    assert untied.decoder.weight is not untied.embedding.weight


@pytest.mark.parametrize("strategy", ["direct", "autoregressive"])
@pytest.mark.parametrize("head", ["point", "gaussian", "quantile"])
@pytest.mark.parametrize("window_norm", ["none", "last", "mean"])
def test_forecaster_heads_and_lengths(strategy, head, window_norm):
    net = Forecaster(horizon=3, rnn={"hidden_size": 6}, strategy=strategy, head=head, quantiles=(0.1, 0.5, 0.9),
                     window_norm=window_norm).eval()  # fmt: skip
    x, lengths = _padded_batch(feats=1)
    out = net(x, lengths)
    assert out.shape == (3, 3, {"point": 1, "gaussian": 2, "quantile": 3}[head])
    if head == "gaussian":
        assert bool((out[..., 1] > 0).all())
    assert net.point(out).shape == (3, 3)
    for b, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(out[b], net(x[b : b + 1, :n], lengths[b : b + 1])[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("strategy", ["direct", "autoregressive"])
@pytest.mark.parametrize("head", ["point", "gaussian", "quantile"])
def test_forecaster_window_norm_follows_the_level(strategy, head):
    """With ``window_norm`` a shifted history gives the same forecast shifted by the same amount (locations
    move, the Gaussian variance does not); the level is the last valid step or the mean over valid steps."""
    torch.manual_seed(0)
    x, lengths = _padded_batch(feats=1)
    shift = torch.tensor([3.0, -2.0, 10.0]).view(3, 1, 1)
    for norm in ("last", "mean"):
        net = Forecaster(horizon=3, rnn={"hidden_size": 6}, strategy=strategy, head=head, window_norm=norm).eval()
        out, moved = net(x, lengths), net(x + shift, lengths)
        expected = moved.clone()
        expected[..., : 1 if head == "gaussian" else None] -= shift
        torch.testing.assert_close(expected, out, rtol=1e-5, atol=1e-5)
        valid = [x[b, :n, 0] for b, n in enumerate(lengths.tolist())]
        level = torch.stack([v[-1] if norm == "last" else v.mean() for v in valid]).unsqueeze(1)
        torch.testing.assert_close(net.level(x, lengths), level)
    plain = Forecaster(horizon=3, rnn={"hidden_size": 6}, strategy=strategy, head=head).eval()
    assert not torch.allclose(plain(x + shift, lengths) - shift, plain(x, lengths), atol=1e-3)
    with pytest.raises(ValueError, match=r"Forecaster: window_norm must be one of \('none', 'last', 'mean'\)"):
        Forecaster(horizon=2, window_norm="max")


@pytest.mark.parametrize("window_norm", ["none", "mean"])
def test_forecaster_season_corrects_the_seasonal_naive_forecast(window_norm):
    """``season=S``: a net whose head outputs zero forecasts exactly ``y[t + k - S]`` (repeated past S)."""
    x = torch.arange(2 * 9, dtype=torch.float32).view(2, 9, 1) ** 1.5
    lengths = torch.tensor([9, 6])
    net = Forecaster(horizon=5, rnn={"hidden_size": 4}, season=3, window_norm=window_norm).eval()
    nn.init.zeros_(net.head.weight)
    nn.init.zeros_(net.head.bias)
    expected = torch.stack([x[0, [6, 7, 8, 6, 7], 0], x[1, [3, 4, 5, 3, 4], 0]])
    torch.testing.assert_close(net(x, lengths)[..., 0], expected)
    with pytest.raises(ValueError, match="season=3 needs windows of at least 3 valid steps, got a window of 2"):
        net(x, torch.tensor([9, 2]))
    with pytest.raises(ValueError, match="Forecaster: season must be a period >= 1"):
        Forecaster(horizon=2, season=0)


def test_backend_option_reaches_the_recurrent_layers():
    torch.manual_seed(0)
    rnn = {"hidden_size": 6, "bidirectional": True}
    eager = SequenceClassifier(num_classes=3, vocab_size=10, embedding_dim=4, rnn=rnn).eval()
    native = SequenceClassifier(num_classes=3, vocab_size=10, embedding_dim=4, rnn={**rnn, "backend": "cudnn"}).eval()
    native.load_state_dict(eager.state_dict())
    assert native.encoder.rnn.backend == "cudnn"
    x, lengths = _padded_batch(vocab=10)
    torch.testing.assert_close(native(x, lengths), eager(x, lengths), rtol=1e-5, atol=1e-6)


def test_bad_inputs_give_clear_errors():
    clf = SequenceClassifier(num_classes=3, input_size=2, rnn={"hidden_size": 4})
    with pytest.raises(ValueError, match=r"SequenceClassifier: expected float features \(B, T, 2\)"):
        clf(torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match=r"SequenceClassifier: lengths must lie in \[1, 5\]"):
        clf(torch.randn(2, 5, 2), torch.tensor([6, 2]))
    with pytest.raises(ValueError, match=r"lengths must be an integer tensor of shape \(2,\)"):
        clf(torch.randn(2, 5, 2), torch.tensor([5, 2, 1]))
    with pytest.raises(ValueError, match="pass exactly one of num_classes or output_size"):
        SequenceClassifier(num_classes=3, output_size=1, input_size=2)
    with pytest.raises(ValueError, match="pass exactly one of input_size or vocab_size"):
        SequenceClassifier(num_classes=3)
    with pytest.raises(ValueError, match="pooling must be one of"):
        SequenceClassifier(num_classes=3, input_size=2, pooling="sum")
    tokens = SequenceTagger(num_classes=3, vocab_size=6, rnn={"hidden_size": 4})
    with pytest.raises(ValueError, match=r"SequenceTagger: x ids must lie in \[0, 6\) \(vocab_size=6\)"):
        tokens(torch.tensor([[4, 9]]))
    s2s = Seq2Seq(10, 8, rnn={"hidden_size": 4}, embedding_dim=4)
    src, lengths = _padded_batch(vocab=10)
    with pytest.raises(ValueError, match=r"Seq2Seq: tgt_in ids must lie in \[0, 8\)"):
        s2s(src, lengths, torch.full((3, 4), 9))
    with pytest.raises(ValueError, match="attention must be one of"):
        Seq2Seq(10, 8, attention="luong")
    with pytest.raises(ValueError, match="cell must be one of"):
        Seq2Seq(10, 8, rnn={"cell": "transformer"})
    gen = ConditionalGenerator(vocab_size=6, num_conditions=2, rnn={"hidden_size": 4})
    with pytest.raises(ValueError, match=r"ConditionalGenerator: cond ids must lie in \[0, 2\)"):
        gen(torch.tensor([0, 5]), torch.tensor([[1, 4], [1, 5]]))
    with pytest.raises(ValueError, match="Forecaster: head must be one of"):
        Forecaster(horizon=2, head="laplace")


@pytest.mark.parametrize("module", ["many_to_one", "tagger", "seq2seq", "lm", "forecaster"])
def test_docstring_examples_run(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(f"seqforge.models.{module}"))
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize(
    "build",
    [
        lambda o: seqforge.models.SequenceClassifier(num_classes=3, input_size=2, rnn={"hidden_size": 4, **o}),
        lambda o: seqforge.models.SequenceTagger(num_classes=3, input_size=2, rnn={"hidden_size": 4, **o}),
        lambda o: seqforge.models.Seq2Seq(6, 7, rnn={"hidden_size": 4, **o}),
        lambda o: seqforge.models.ConditionalGenerator(vocab_size=6, num_conditions=2, rnn={"hidden_size": 4, **o}),
        lambda o: seqforge.models.LanguageModel(6, rnn={"hidden_size": 4, **o}),
        lambda o: seqforge.models.Forecaster(horizon=2, rnn={"hidden_size": 4, **o}, strategy="autoregressive"),
    ],
)
def test_regularizer_keys_of_the_spec_reach_every_recurrent_layer(build):
    net = build({"recurrent_dropout": 0.25, "zoneout": 0.1})
    layers = [m for m in net.modules() if isinstance(m, seqforge.layers.RecurrentBase)]
    assert layers and all(m.recurrent_dropout == 0.25 and m.zoneout == 0.1 for m in layers)
    with pytest.raises(TypeError, match="zonout"):
        build({"zonout": 0.1})


# ------------------------------------------------------------------ one recurrent spec
def test_a_recurrent_spec_reaches_encoder_and_decoder_and_bidirectional_only_the_encoder() -> None:
    spec = seqforge.RecurrentSpec(cell="GRU", hidden_size=6, num_layers=2, bidirectional=True, zoneout=0.1)
    s2s = Seq2Seq(10, 9, rnn=spec, embedding_dim=4)
    fc = Forecaster(horizon=2, rnn=spec, strategy="autoregressive")
    for encoder, decoder in ((s2s.encoder.rnn, s2s.decoder), (fc.encoder.rnn, fc.decoder)):
        for layer in (encoder, decoder):
            assert isinstance(layer, seqforge.GRU)
            assert (layer.hidden_size, layer.num_layers, layer.zoneout) == (6, 2, 0.1)
        assert encoder.bidirectional and not decoder.bidirectional
    assert SequenceTagger(num_classes=2, vocab_size=5).encoder.bidirectional  # the tagger's own default
    assert not SequenceTagger(num_classes=2, vocab_size=5, rnn={"bidirectional": False}).encoder.bidirectional
    assert Forecaster(horizon=2).encoder.rnn.hidden_size == 64 and Seq2Seq(5, 5).encoder.bidirectional


def test_a_recurrent_spec_refuses_unknown_keys_and_options_its_cell_lacks() -> None:
    with pytest.raises(TypeError, match=r"SequenceClassifier: rnn has no key 'hiden_size'; did you mean "
                                        r"'hidden_size'\? the keys of a recurrent spec are \['cell', 'hidden_size'"):
        SequenceClassifier(num_classes=2, input_size=3, rnn={"hiden_size": 4})
    with pytest.raises(TypeError, match=r"rnn must be a RecurrentSpec or a mapping"):
        SequenceClassifier(num_classes=2, input_size=3, rnn="lstm")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"LanguageModel: rnn\.forget_bias=1\.0 needs a built-in cell .*MinGRUCell"):
        LanguageModel(6, rnn={"cell": "mingru", "forget_bias": 1.0})
    for build in (lambda: LanguageModel(6, rnn={"bidirectional": True}),
                  lambda: ConditionalGenerator(vocab_size=6, num_conditions=2, rnn={"bidirectional": True})):
        with pytest.raises(ValueError, match=r"rnn\.bidirectional=True"):
            build()


# ------------------------------------------------------------------ any cell in every model
USER_CELL_SPECS = [
    pytest.param({"_target_": "helpers.cells.PeepholeLSTMCell"}, id="peephole-target"),  # (h, c) state
    pytest.param("helpers.cells.IndRNNCell", id="indrnn-class"),  # a lone-tensor state
    pytest.param("GRU", id="builtin-upper-case"),
]


def _cell(spec: object) -> object:
    if isinstance(spec, str) and spec.startswith("helpers."):
        import helpers.cells

        return getattr(helpers.cells, spec.rsplit(".", 1)[1])
    return spec


@pytest.mark.parametrize("spec", USER_CELL_SPECS)
def test_every_model_runs_any_cell_with_its_bridge_and_decoding(spec: object) -> None:
    torch.manual_seed(0)
    cell = _cell(spec)
    x, lengths = torch.randn(3, 7, 2), torch.tensor([7, 4, 1])
    ids = torch.randint(3, 10, (3, 7))
    clf = SequenceClassifier(num_classes=4, input_size=2,
                             rnn={"hidden_size": 6, "cell": cell, "bidirectional": True, "num_layers": 2})
    tagger = SequenceTagger(num_classes=5, vocab_size=10, embedding_dim=4, rnn={"hidden_size": 6, "cell": cell})
    lm = LanguageModel(vocab_size=10, embedding_dim=6, rnn={"hidden_size": 6, "cell": cell, "num_layers": 2})
    fc = Forecaster(horizon=3, input_size=2, rnn={"hidden_size": 6, "cell": cell}, strategy="autoregressive")
    s2s = Seq2Seq(10, 10, rnn={"hidden_size": 6, "cell": cell, "num_layers": 2}, embedding_dim=5)
    gen = ConditionalGenerator(vocab_size=10, num_conditions=3, rnn={"hidden_size": 6, "cell": cell}, embedding_dim=4)
    outputs = [clf(x, lengths), tagger(ids, lengths), lm(ids)[0], fc(x, lengths), s2s(ids, lengths, ids[:, :5])[0],
               gen(torch.tensor([0, 1, 2]), ids[:, :5])]  # fmt: skip
    loss = sum(o.sum() for o in outputs)
    loss.backward()
    for net in (clf, tagger, lm, fc, s2s, gen):
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters() if p.requires_grad)
    s2s.eval(), gen.eval(), lm.eval()
    tokens, out_lengths = s2s.generate(ids, lengths, beam_size=2, max_len=4)
    assert tokens.shape[0] == 3 and out_lengths.max() <= 4
    assert gen.generate(torch.tensor([0, 2]), max_len=4)[0].shape[0] == 2
    assert lm.generate(ids[:2, :3], max_new_tokens=4)[0].shape == (2, 4)
    # the bridge follows the decoder cell's state structure
    state = s2s.encode(ids, lengths)["hidden"]
    reference = s2s.decoder.init_state(3)
    assert type(state) is type(reference)
    assert [s.shape for s in (state if isinstance(state, tuple) else (state,))] == [
        s.shape for s in (reference if isinstance(reference, tuple) else (reference,))
    ]



@pytest.mark.parametrize(("node", "cls"), [
    ("{_target_:helpers.cells.PeepholeLSTMCell}", "PeepholeLSTMCell"),
    ("{_target_:helpers.cells.PeepholeLSTMCell,_partial_:true}", "PeepholeLSTMCell"),
    ("{_target_:seqforge.cells.CfCCell,backbone_units:7}", "CfCCell"),
])  # fmt: skip
def test_a_config_cell_node_builds_with_or_without_partial_and_passes_its_keys(node: str, cls: str) -> None:
    """``model.net.rnn`` is ``_recursive_: false``: the model, not Hydra, builds the cell node per layer."""
    from hydra.utils import instantiate

    from seqforge.utils.config import compose_config

    cfg = compose_config("train", ["+experiment=ucr_gru", f"model.net.rnn.cell={node}", "model.net.rnn.hidden_size=4"])
    net = instantiate(cfg.model.net, input_size=12, num_classes=9)
    cells = net.encoder.rnn.cells
    assert len(cells) == 4 and all(type(c).__name__ == cls for c in cells)  # 2 layers x 2 directions
    assert net(torch.randn(2, 5, 12)).shape == (2, 9)
    if cls == "CfCCell":
        assert all(c.backbone_units == 7 for c in cells)
