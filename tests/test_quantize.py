"""``seqforge.quantize``: the built-in LSTM/GRU layers and the Linear layers really become int8, keep the float
layer's call (lengths, padding zeroed, last valid state), stay close to float, and what cannot be converted
is named (left float with a warning, or refused with ``strict=True``).

Tolerance: int8 weights carry one scale per tensor (a step of ``max|w| / 127``); with the layers' default
init and inputs ``N(0, 1)`` the outputs (in ``(-1, 1)``) stay within ``ATOL = 0.03`` of float32, and the
models' outputs within ``REL = 5%`` of their largest magnitude.
"""

from __future__ import annotations

import re

import lightning as L
import pytest
import torch
from test_train import QUIET
from torch import Tensor, nn
from torch.ao.nn.quantized import dynamic as nnqd

import seqforge
from seqforge.checkpoint import datamodule_for, load_from_checkpoint, read_checkpoint
from seqforge.exporting import ExportGraph, example_inputs
from seqforge.models import (
    ConditionalGenerator,
    Forecaster,
    LanguageModel,
    Seq2Seq,
    SequenceClassifier,
    SequenceTagger,
)
from seqforge.predict import predict
from seqforge.quantizing import QuantizedRecurrent
from seqforge.train import train
from seqforge.utils.config import compose_config

ATOL = 0.03
REL = 0.05


def mixed(batch: int, steps: int, features: int, seed: int) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, steps + 1, (batch,), generator=gen)
    lengths[0], lengths[1] = steps, 1
    return torch.randn(batch, steps, features, generator=gen), lengths


def int8_weights(layer: QuantizedRecurrent) -> dict[str, Tensor]:
    return layer.int8._weight_bias()["weight"]


@pytest.mark.parametrize("layer_cls", [seqforge.LSTM, seqforge.GRU])
@pytest.mark.parametrize("bias", [True, False])
def test_layer_becomes_int8_matches_float_and_respects_lengths(layer_cls: type, bias: bool) -> None:
    torch.manual_seed(0)
    layer = layer_cls(5, 16, num_layers=2, bias=bias, batch_first=True, bidirectional=True, backend="eager").eval()
    q = seqforge.quantize(layer)
    assert isinstance(q, QuantizedRecurrent) and isinstance(q.int8, (nnqd.LSTM, nnqd.GRU))
    weights = int8_weights(q)
    assert set(weights) == {f"weight_{k}_l{i}{s}" for k in ("ih", "hh") for i in (0, 1) for s in ("", "_reverse")}
    assert all(w.dtype == torch.qint8 for w in weights.values())
    assert next(layer.parameters()).dtype == torch.float32  # the float layer is left as it was (a copy)

    x, lengths = mixed(6, 9, 5, seed=1)
    x_nan = x.clone()
    for row, n in enumerate(lengths.tolist()):
        x_nan[row, n:] = float("nan")  # padding content never reaches anything
    with torch.no_grad():
        want, want_state = layer(x, lengths=lengths)
        got, got_state = q(x_nan, lengths=lengths)
    pad = torch.arange(9)[None, :] >= lengths[:, None]  # (B, T)
    assert torch.equal(got[pad], torch.zeros_like(got[pad]))
    err = (got - want).abs().max().item()
    assert 0 < err <= ATOL  # rounded weights (not float), close to float
    for g, w in zip(got_state if isinstance(got_state, tuple) else (got_state,),
                    want_state if isinstance(want_state, tuple) else (want_state,)):  # fmt: skip
        torch.testing.assert_close(g, w, atol=ATOL, rtol=0)  # the last valid step's state, per sequence

    hx = layer.init_state(6)
    hx = tuple(torch.randn_like(h) for h in hx) if isinstance(hx, tuple) else torch.randn_like(hx)
    with torch.no_grad():
        torch.testing.assert_close(q(x, hx, lengths)[0], layer(x, hx, lengths)[0], atol=ATOL, rtol=0)
        unbatched = q(x[2, : lengths[2]])[0]  # (T, I): no batch dimension
        torch.testing.assert_close(unbatched, want[2, : lengths[2]], atol=ATOL, rtol=0)
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, 9\]"):
        q(x, lengths=torch.tensor([9, 0, 2, 3, 4, 5]))


def test_step_fed_one_step_at_a_time_matches_the_float_forward() -> None:
    torch.manual_seed(0)
    layer = seqforge.LSTM(3, 8, num_layers=2, batch_first=True).eval()
    q = seqforge.quantize(layer)
    x, _ = mixed(4, 6, 3, seed=2)
    state = q.init_state(4)
    steps = []
    with torch.no_grad():
        for t in range(6):
            out, state = q.step(x[:, t], state)
            steps.append(out)
        full, full_state = layer(x)
    # not bitwise the int8 forward: each call quantizes its own activations (one scale per tensor)
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=ATOL, rtol=0)
    torch.testing.assert_close(state, full_state, atol=ATOL, rtol=0)


def _nets() -> list:
    torch.manual_seed(0)
    small = {"hidden_size": 16}
    return [
        pytest.param(SequenceClassifier(num_classes=3, input_size=4, rnn={**small, "cell": "gru"}), id="classifier"),
        pytest.param(SequenceClassifier(num_classes=3, input_size=4, pooling="mean",
                                        rnn={**small, "num_layers": 2, "bidirectional": True}), id="bilstm-mean"),
        pytest.param(SequenceTagger(num_classes=5, vocab_size=12, rnn={**small, "cell": "gru"}), id="tagger"),
        pytest.param(LanguageModel(vocab_size=12, embedding_dim=16, rnn=small), id="lm"),
        pytest.param(Forecaster(input_size=2, horizon=3, strategy="autoregressive", rnn=small), id="forecaster"),
    ]


@pytest.mark.parametrize("net", _nets())
def test_every_model_quantizes_close_to_float(net: nn.Module) -> None:
    net.eval()
    q = seqforge.quantize(net)
    recurrent = [n for n, m in net.named_modules() if isinstance(m, seqforge.Recurrent)]
    linear = [n for n, m in net.named_modules() if isinstance(m, nn.Linear)]
    assert q.quantization.int8 == sorted(recurrent + linear) and not q.quantization.left_float
    for name in recurrent:
        assert isinstance(q.get_submodule(name), QuantizedRecurrent)
    for name in linear:
        assert q.get_submodule(name).weight().dtype == torch.qint8
    x, lengths = example_inputs(net, batch=5, steps=11, seed=3)
    with torch.no_grad():
        want, got = ExportGraph(net)(x, lengths), ExportGraph(q)(x, lengths)
    assert 0 < (got - want).abs().max() <= REL * want.abs().max()


def test_decoders_quantize_and_decode() -> None:
    torch.manual_seed(0)
    s2s = Seq2Seq(10, 11, embedding_dim=8, rnn={"hidden_size": 16}).eval()
    src, src_lengths = torch.randint(3, 10, (4, 6)), torch.tensor([6, 1, 4, 2])
    tgt_in = torch.randint(3, 11, (4, 5))
    q = seqforge.quantize(s2s)
    assert {"encoder.rnn", "decoder", "out", "attention.v"} <= set(q.quantization.int8)
    with torch.no_grad():
        want, got = s2s(src, src_lengths, tgt_in)[0], q(src, src_lengths, tgt_in)[0]
    assert 0 < (got - want).abs().max() <= REL * want.abs().max()
    tokens, lengths = q.greedy(src, src_lengths, max_len=7)
    assert tokens.shape[0] == 4 and int(lengths.max()) <= 7

    gen = ConditionalGenerator(vocab_size=10, num_conditions=3, rnn={"hidden_size": 16}).eval()
    qg = seqforge.quantize(gen)
    assert isinstance(qg.rnn, QuantizedRecurrent)
    cond, y_in = torch.tensor([0, 1, 2]), torch.randint(3, 10, (3, 6))
    with torch.no_grad():
        want, got = gen(cond, y_in), qg(cond, y_in)
    assert 0 < (got - want).abs().max() <= REL * want.abs().max()


def test_what_cannot_be_quantized_is_named_or_refused() -> None:
    torch.manual_seed(0)
    nets = {  # the reason each one gives
        "cell 'seqforge.cells.mingru.MinGRUCell' is not the built-in LSTM or GRU cell":
            SequenceClassifier(num_classes=3, input_size=4, rnn={"hidden_size": 8, "cell": "mingru"}),
        "layer_norm=True is not in torch's int8 LSTM kernel":
            SequenceClassifier(num_classes=3, input_size=4, rnn={"hidden_size": 8, "layer_norm": True}),
        "zoneout=0.1 is not in torch's int8 GRU kernel":
            SequenceClassifier(num_classes=3, input_size=4, rnn={"hidden_size": 8, "cell": "gru", "zoneout": 0.1}),
        "mode RNN_TANH has no int8 layer kernel in torch":
            SequenceClassifier(num_classes=3, input_size=4, rnn={"hidden_size": 8, "cell": "rnn"}),
    }  # fmt: skip
    x, lengths = mixed(3, 5, 4, seed=4)
    for what, net in nets.items():
        net.eval()
        with pytest.warns(UserWarning, match=rf"quantize: left in float32: 'encoder\.rnn' \(\w+: {re.escape(what)}"):
            q = seqforge.quantize(net)
        assert list(q.quantization.left_float) == ["encoder.rnn"] and q.quantization.int8 == ["head"]
        assert type(q.encoder.rnn) is type(net.encoder.rnn)
        with torch.no_grad():
            torch.testing.assert_close(q(x, lengths), net(x, lengths), atol=REL, rtol=0)  # only the head is int8
        with pytest.raises(ValueError, match=rf"strict=True.*'encoder\.rnn' \(\w+: {re.escape(what)}"):
            seqforge.quantize(net, strict=True)
    projected = seqforge.LSTM(4, 8, proj_size=3)  # a lone layer: its name is the root's, ''
    with pytest.warns(UserWarning, match=r"left in float32: '' \(LSTM: proj_size=3 is not in torch's int8 LSTM"):
        assert seqforge.quantize(projected).quantization.left_float.keys() == {""}
    with pytest.raises(ValueError, match=r"float32 on the CPU.*'encoder\.rnn\.weight_ih_l0' is torch\.float64"):
        seqforge.quantize(SequenceClassifier(num_classes=3, input_size=4, rnn={"hidden_size": 8}).double())


def test_main_job_checkpoint_quantized_runs_the_real_test_loop(tmp_path) -> None:
    metrics = train(compose_config("train", ["+experiment=ucr_gru", "debug=fdr", *QUIET], tmp_path))
    ckpt = metrics["best_ckpt_path"]
    task = load_from_checkpoint(ckpt)
    datamodule = datamodule_for(read_checkpoint(ckpt))
    float_net = task.net
    task.net = seqforge.quantize(float_net)
    assert task.net.quantization.int8 == ["encoder.rnn", "head"]
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, limit_test_batches=2)
    (tested,) = trainer.test(task, datamodule=datamodule, verbose=False)
    assert 0.0 <= tested["test/acc"] <= 1.0
    x, lengths, _ = next(iter(datamodule.test_dataloader()))
    with torch.no_grad():
        agree = (task.net(x, lengths).argmax(-1) == float_net(x, lengths).argmax(-1)).float().mean()
    assert agree >= 0.9  # the int8 net predicts the float net's classes
    series = [row[:n].numpy() for row, n in zip(x[:4], lengths[:4].tolist())]
    assert len(predict(task, series)) == 4  # the README's way: task.net = seqforge.quantize(task.net)
