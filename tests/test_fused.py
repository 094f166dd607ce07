"""Fused backends against the eager reference and torch.nn, in float64, forward and every gradient.

Tolerance: ``TOL = 1e-8`` absolute on float64 values and gradients (observed differences are ~1e-13:
the fused paths compute the same expressions in a different order).
"""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import seqforge
from seqforge.fused import available_backends, choose_backend, export_torchscript, fusion_groups, get_backend
from seqforge.fused.cuda_graphs import GraphCache
from seqforge.fused.fusion import loop_fusion_report
from seqforge.fused.parity import (
    PARITY_TOL,
    backend_parity,
    max_abs_diff,
    outputs_and_grads,
    parity_inputs,
    perturbed_layer,
)

TOL = PARITY_TOL
CELLS = {"lstm": seqforge.LSTM, "gru": seqforge.GRU, "rnn": seqforge.RNN, "rnn_relu": seqforge.RNN}
TORCH = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN, "rnn_relu": nn.RNN}


def make_layer(cell: str, backend: str = "eager", **kwargs) -> seqforge.layers.RecurrentBase:
    if cell == "rnn_relu":
        kwargs["nonlinearity"] = "relu"
    return perturbed_layer(CELLS[cell], backend, **kwargs)


def assert_close(got: list[torch.Tensor], ref: list[torch.Tensor]) -> None:
    diff = max_abs_diff(got, ref)
    assert diff < TOL, f"differs by {diff:.3g}"


def test_backends_registered():
    assert {"eager", "script", "compile", "cudnn", "auto"} <= set(available_backends())


@pytest.mark.parametrize("backend", ["script", "cudnn", "auto"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "rnn_relu"])
def test_plain_matches_eager_and_torch(cell: str, backend: str):
    layer = make_layer(cell, backend)
    reference = make_layer(cell, "eager")
    torch_layer = TORCH[cell](3, 5, num_layers=2, bidirectional=True, batch_first=True, dtype=torch.float64,
                             **({"nonlinearity": "relu"} if cell == "rnn_relu" else {}))  # fmt: skip
    torch_layer.load_state_dict(layer.state_dict())
    x, lengths, hx = parity_inputs(layer)
    got = outputs_and_grads(layer, x, lengths, hx)
    assert_close(got, outputs_and_grads(reference, x, lengths, hx))
    assert_close(got, outputs_and_grads(torch_layer, x, lengths, hx))


@pytest.mark.parametrize("backend", ["script", "auto"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_layer_norm_matches_eager(cell: str, backend: str):
    layer = make_layer(cell, backend, layer_norm=True)
    reference = make_layer(cell, "eager", layer_norm=True)
    x, lengths, hx = parity_inputs(layer)
    got = outputs_and_grads(layer, x, lengths, hx)
    assert_close(got, outputs_and_grads(reference, x, lengths, hx))


def test_script_layer_norm_float32_matches_eager():
    """On CPU float32 the layer-norm input projection's matmuls run through oneDNN
    (``LayerNormProjection``) and the loops' tanh as ``2 sigmoid(2x) - 1``: the same function as eager
    within float32 rounding (tolerance 1e-4 absolute on values and gradients of order one)."""
    layer = make_layer("lstm", "script", layer_norm=True).float()
    reference = make_layer("lstm", "eager", layer_norm=True).float()
    x, lengths, hx = parity_inputs(layer)
    x, hx = x.float(), tuple(h.float() for h in hx)
    with torch.profiler.profile() as prof:
        got = outputs_and_grads(layer, x, lengths, hx)
    if torch.backends.mkldnn.is_available():
        assert any("_linear_pointwise" in e.key for e in prof.key_averages())
    diff = max_abs_diff(got, outputs_and_grads(reference, x, lengths, hx))
    assert diff < 1e-4, f"differs by {diff:.3g}"


def test_script_layer_norm_with_frozen_input_weights_matches_eager():
    """Only the gain of the layer-norm input projection wants a gradient there (``x`` without grad, frozen
    ``weight_ih``, ``bias_ih`` and ``ln_ih_bias``): the remaining gradients match eager (float64, ``TOL``)."""
    grads = []
    for backend in ("script", "eager"):
        layer = make_layer("lstm", backend, layer_norm=True, num_layers=1)
        for name, p in layer.named_parameters():
            p.requires_grad_(name.split("_l0")[0] not in ("weight_ih", "bias_ih", "ln_ih_bias"))
        x, lengths, hx = parity_inputs(layer)
        out, _ = layer(x, tuple(h[:2] for h in hx), lengths=lengths)
        trained = [p for p in layer.parameters() if p.requires_grad]
        grads.append(list(torch.autograd.grad(out.pow(2).sum(), trained)))
    assert_close(grads[0], grads[1])


def test_script_layer_norm_lstm_passes_gradgradcheck():
    """Double backward through both custom functions of the layer-norm path (the input projection's and the
    loops'), float64, with lengths: the gradient with a graph equals the hand-written one, and its own
    derivatives pass gradgradcheck."""
    torch.manual_seed(0)
    m = seqforge.LSTM(2, 3, layer_norm=True, backend="script", dtype=torch.float64)
    x = torch.randn(3, 2, 2, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([3, 2])
    inputs = (x, *m.parameters())
    weight = torch.randn(3, 2, 3, dtype=torch.float64)
    with_graph = torch.autograd.grad((m(x, lengths=lengths)[0] * weight).sum(), inputs, create_graph=True)
    assert_close(list(with_graph), list(torch.autograd.grad((m(x, lengths=lengths)[0] * weight).sum(), inputs)))
    assert torch.autograd.gradgradcheck(lambda x, *p: m(x, lengths=lengths)[0], inputs)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_script_without_lengths_bias_or_bidirectional(cell: str):
    layer = make_layer(cell, "script", bias=False, bidirectional=False, num_layers=3, batch_first=False)
    reference = make_layer(cell, "eager", bias=False, bidirectional=False, num_layers=3, batch_first=False)
    x, _, hx = parity_inputs(layer)
    x = x.transpose(0, 1)
    full = torch.full((x.shape[1],), x.shape[0])  # lengths equal to T: same as no lengths
    got = outputs_and_grads(layer, x, None, hx)
    assert_close(got, outputs_and_grads(reference, x, None, hx))
    assert_close(got, outputs_and_grads(layer, x, full, hx))


def test_script_inter_layer_dropout_matches_eager_in_training():
    layer = make_layer("lstm", "script", dropout=0.4, num_layers=3)
    reference = make_layer("lstm", "eager", dropout=0.4, num_layers=3)
    x, lengths, hx = parity_inputs(layer)
    torch.manual_seed(5)
    got = outputs_and_grads(layer, x, lengths, hx)
    torch.manual_seed(5)
    assert_close(got, outputs_and_grads(reference, x, lengths, hx))
    torch.manual_seed(6)
    other = outputs_and_grads(layer, x, lengths, hx)
    assert (other[0] - got[0]).abs().max() > 1e-3  # dropout is really active


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_script_recurrent_dropout_matches_eager_in_training(cell: str):
    """Same RNG stream: masks are drawn per layer and direction in the eager backend's order."""
    opts = {"recurrent_dropout": 0.3, "dropout": 0.2, "layer_norm": cell == "lstm"}
    layer = make_layer(cell, "script", **opts)
    reference = make_layer(cell, "eager", **opts)
    x, lengths, hx = parity_inputs(layer)
    torch.manual_seed(7)
    got = outputs_and_grads(layer, x, lengths, hx)
    torch.manual_seed(7)
    assert_close(got, outputs_and_grads(reference, x, lengths, hx))
    layer.eval()
    reference.eval()
    assert_close(outputs_and_grads(layer, x, lengths, hx), outputs_and_grads(reference, x, lengths, hx))


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_script_inference_path_matches_eager(cell: str):
    """Under no_grad the loops run without saving anything for backward (a separate code path)."""
    layer = make_layer(cell, "script", layer_norm=True)
    reference = make_layer(cell, "eager", layer_norm=True)
    x, lengths, hx = parity_inputs(layer)
    state = hx if len(hx) == 2 else hx[0]
    with torch.no_grad():
        out, final = layer(x, state, lengths=lengths)
        ref_out, ref_final = reference(x, state, lengths=lengths)
    finals = final if isinstance(final, tuple) else (final,)
    ref_finals = ref_final if isinstance(ref_final, tuple) else (ref_final,)
    assert_close([out, *finals], [ref_out, *ref_finals])


def test_script_under_bf16_autocast_runs_the_loop_in_float32():
    torch.manual_seed(0)
    layer = seqforge.LSTM(8, 16, backend="script", layer_norm=True)
    reference = seqforge.LSTM(8, 16, backend="eager", layer_norm=True)
    reference.load_state_dict(layer.state_dict())
    x = torch.randn(5, 3, 8, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, (h_n, c_n) = layer(x)
        ref, _ = reference(x)
    assert out.dtype == h_n.dtype == c_n.dtype == torch.float32
    assert (out - ref.float()).abs().max() < 5e-2  # bf16 input projection in both
    out.sum().backward()
    assert x.grad.dtype == torch.float32 and layer.weight_hh_l0.grad.dtype == torch.float32


@pytest.mark.slow
@pytest.mark.parametrize("layer_norm", [False, True])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_compile_matches_eager(cell: str, layer_norm: bool):
    """torch.compile works on this CPU but costs ~25 s on first use, hence slow. Training mode with
    recurrent dropout (same RNG stream as eager)."""
    layer = make_layer(cell, "compile", layer_norm=layer_norm, recurrent_dropout=0.3)
    reference = make_layer(cell, "eager", layer_norm=layer_norm, recurrent_dropout=0.3)
    x, lengths, hx = parity_inputs(layer)
    torch.manual_seed(3)
    got = outputs_and_grads(layer, x, lengths, hx)
    torch.manual_seed(3)
    assert_close(got, outputs_and_grads(reference, x, lengths, hx))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("layer_norm", [False, True])
def test_export_survives_jit_save_load(cell: str, layer_norm: bool):
    layer = make_layer(cell, "eager", layer_norm=layer_norm, recurrent_dropout=0.2).eval()
    buffer = io.BytesIO()
    torch.jit.save(export_torchscript(layer), buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    assert set(loaded.state_dict()) == set(layer.state_dict())
    x, lengths, hx = parity_inputs(layer)
    ref = outputs_and_grads(layer, x, lengths, hx)
    xg = x.clone().requires_grad_()
    out, finals = loaded(xg, hx if len(hx) == 2 else hx[0], lengths)  # torch's signature: (h, c) or h
    states = list(finals) if isinstance(finals, tuple) else [finals]
    assert_close([out, *states], ref[: 1 + len(hx)])
    weight = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    loss = (out * weight).sum() + sum((s * (k + 2)).sum() for k, s in enumerate(states))
    (dx,) = torch.autograd.grad(loss, [xg])
    assert_close([dx], [ref[1 + len(hx)]])


def test_export_in_training_mode_draws_the_same_masks_and_rejects_zoneout():
    layer = make_layer("gru", "eager", layer_norm=True, recurrent_dropout=0.3, dropout=0.2)
    scripted_layer = export_torchscript(layer)
    x, lengths, hx = parity_inputs(layer)
    torch.manual_seed(11)
    out, _ = scripted_layer(x, hx[0], lengths)
    torch.manual_seed(11)
    ref, _ = layer(x, hx[0], lengths=lengths)
    assert_close([out], [ref])
    with pytest.raises(ValueError, match="LSTM: zoneout=0.1 has no TorchScript loop; .* export_torchscript need"):
        export_torchscript(seqforge.LSTM(3, 5, zoneout=0.1))


@pytest.mark.parametrize(
    ("backend", "option", "value"),
    [("cudnn", "layer_norm", True), ("cudnn", "zoneout", 0.1), ("cudnn", "recurrent_dropout", 0.2),
     ("script", "zoneout", 0.1), ("compile", "zoneout", 0.3)],
)  # fmt: skip
def test_impossible_combinations_raise_at_construction(backend: str, option: str, value):
    with pytest.raises(ValueError, match=rf"LSTM\(backend='{backend}'\): {option}={value!r}"):
        seqforge.LSTM(3, 5, backend=backend, **{option: value})


def test_options_changed_after_construction_are_still_rejected():
    layer = seqforge.LSTM(3, 5, backend="eager", layer_norm=True)
    with pytest.raises(ValueError, match="layer_norm=True"):
        layer.backend = "cudnn"
    assert layer.backend == "eager"
    layer = seqforge.GRU(3, 5, backend="script")
    layer.zoneout = 0.2
    with pytest.raises(ValueError, match=r"GRU\(backend='script'\): zoneout=0.2"):
        layer(torch.randn(2, 1, 3))


def test_auto_records_and_logs_its_choice_once(caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.INFO, logger="seqforge.fused.backends"):
        plain = seqforge.LSTM(3, 5, backend="auto")
        normed = seqforge.GRU(3, 5, backend="auto", layer_norm=True)
        zoned = seqforge.LSTM(3, 5, backend="auto", zoneout=0.1)
        dropped = seqforge.GRU(3, 5, backend="auto", recurrent_dropout=0.1)
        x = torch.randn(4, 2, 3)
        for layer in (plain, normed, zoned, plain):
            out, _ = layer.eval()(x)  # eval: zoneout is deterministic
            assert torch.equal(out, get_backend(layer.backend_used).forward(layer, x, _zeros(layer, 2), None)[0])
    # torch's kernels are called "native" on CPU (issue 18: "cudnn" only where cuDNN runs them)
    assert (plain.backend_used, normed.backend_used, zoned.backend_used) == ("native", "script", "eager")
    assert dropped.backend_used == "script"
    assert choose_backend(zoned) == "eager"
    assert [r.getMessage() for r in caplog.records] == [
        "LSTM(backend='auto') runs backend 'native'",
        "GRU(backend='auto') runs backend 'script'",
        "LSTM(backend='auto') runs backend 'eager'",
        "GRU(backend='auto') runs backend 'script'",
    ]
    plain.zoneout = 0.1  # options changed after construction: re-chosen, logged again
    with caplog.at_level(logging.INFO, logger="seqforge.fused.backends"):
        caplog.clear()
        plain(x)
    assert plain.backend_used == "eager"
    assert [r.getMessage() for r in caplog.records] == ["LSTM(backend='auto') runs backend 'eager'"]


def test_torch_kernels_are_called_native_on_cpu(caplog: pytest.LogCaptureFixture):
    """Issue 18: on CPU torch's kernels are "native" (not "cudnn") in backend_used, the reason, the log and
    what train() writes to metrics.json; "native" is also accepted as the backend's name."""
    from seqforge.train import backend_used

    chosen = seqforge.LSTM(3, 5, backend="cudnn")
    assert chosen.backend == "cudnn" and chosen.backend_used == "native"
    with caplog.at_level(logging.INFO, logger="seqforge.fused.backends"):
        auto = seqforge.GRU(3, 5, num_layers=2, backend="auto")
    assert auto.backend_used == "native" and auto.backend_reason == "built-in cell; native supports these options"
    assert [r.getMessage() for r in caplog.records] == ["GRU(backend='auto') runs backend 'native'"]
    assert backend_used(nn.Sequential(chosen, nn.Linear(5, 1))) == "native"
    named = seqforge.GRU(3, 5, num_layers=2, backend="native")
    named.load_state_dict(auto.state_dict())
    x = torch.randn(4, 2, 3)
    assert named.backend_used == "native" and torch.equal(named(x)[0], auto(x)[0])
    with pytest.raises(ValueError, match=r"GRU\(backend='native'\): layer_norm=True is not supported"):
        seqforge.GRU(3, 5, backend="native", layer_norm=True)
    with pytest.raises(ValueError, match=r"LSTM\(backend='cudnn'\): layer_norm=True is not supported"):
        seqforge.LSTM(3, 5, backend="cudnn", layer_norm=True)


def _zeros(layer, batch: int) -> tuple[torch.Tensor, ...]:
    shape = (layer.num_layers * layer.num_directions, batch, layer.hidden_size)
    return tuple(torch.zeros(shape) for _ in range(2 if layer.mode == "LSTM" else 1))


def test_graph_cache_falls_back_on_cpu():
    cache = GraphCache()
    x = torch.randn(3)
    assert not cache.can_capture([x, 2])
    assert torch.equal(cache("double", lambda t: [t * 2], [x])[0], x * 2)
    assert len(cache) == 0


LOOP_WITH_GROUP = """
graph(%x : Tensor, %n : int):
  %t : bool = prim::Constant[value=1]()
  %y : Tensor = prim::Loop(%n, %t, %x)
    block0(%i : int, %h : Tensor):
      %z : Tensor = prim::TensorExprGroup(%h)
      -> (%t, %z)
  return (%y)
"""


def test_fusion_groups_are_found_inside_loops():
    counts = fusion_groups(torch._C.parse_ir(LOOP_WITH_GROUP))
    assert counts == {"prim::TensorExprGroup": 1, "prim::FusionGroup": 0, "prim::CudaFusionGroup": 0}


def test_fusion_report_runs_on_cpu():
    """This CPU build has no LLVM backend for the TensorExpr fuser, so no group is expected here."""
    report = loop_fusion_report("GRU", batch=2, hidden=4, steps=3, device="cpu", layer_norm=True)
    assert set(report) == {"forward", "backward", "fused"}
    assert report["fused"] == (any(report["forward"].values()) and any(report["backward"].values()))


def test_backend_parity_helper_detects_a_wrong_backend():
    assert backend_parity(seqforge.GRU, "script", layer_norm=True, recurrent_dropout=0.0) < TOL
    layer = perturbed_layer(seqforge.LSTM, "script")
    other = perturbed_layer(seqforge.LSTM, "eager", seed=1)  # different parameters must be caught
    x, lengths, hx = parity_inputs(layer)
    assert max_abs_diff(outputs_and_grads(layer, x, lengths, hx), outputs_and_grads(other, x, lengths, hx)) > 1e-3


def test_benchmark_script_writes_results(tmp_path: Path):
    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, str(root / "scripts" / "benchmark.py"), "--device", "cpu", "--cells", "lstm", "ln_lstm",
           "--backends", "eager", "script", "torch.nn", "--sizes", "4,2,8", "4,1,8,inference", "--runs", "2",
           "--warmup", "1", "--clock", "cpu", "--out-dir", str(tmp_path)]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, cwd=root, timeout=120)
    (json_file,) = tmp_path.glob("cpu-*.json")
    report = json.loads(json_file.read_text())
    rows = {(r["cell"], r["B"], r["backend"]) for r in report["timings"]}
    assert ("ln_lstm", 2, "script") in rows and ("lstm", 2, "torch.nn") in rows
    assert ("ln_lstm", 2, "torch.nn") not in rows  # torch.nn has no layer-norm LSTM
    assert all("both" in r for r in report["timings"] if r["B"] == 2)
    assert all(set(r) & {"backward", "both"} == set() for r in report["timings"] if r["B"] == 1)
    assert report["parity"] and all(c["pass"] for c in report["parity"])
    assert set(report["fusion"]) == {"lstm", "gru", "ln_lstm"}
    assert report["meta"]["clock"] == "cpu" and report["meta"]["cpu_model"]  # the machine is named
    assert "| ln_lstm | 4 | 2 | 8 | fp32 | script |" in json_file.with_suffix(".md").read_text()


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_cuda_graphs_match_eager(cell: str):
    layer = make_layer(cell, "script", layer_norm=True, device="cuda")
    reference = make_layer(cell, "eager", layer_norm=True, device="cuda")
    x, lengths, hx = parity_inputs(layer)
    ref = outputs_and_grads(reference, x, lengths, hx)
    from seqforge.fused.function import GRAPHS

    before = len(GRAPHS)
    layer.cuda_graphs = False
    for _ in range(2):
        assert_close(outputs_and_grads(layer, x, lengths, hx), ref)
    assert len(GRAPHS) == before
    layer.cuda_graphs = True
    for _ in range(3):  # uncaptured, captured, replayed
        assert_close(outputs_and_grads(layer, x, lengths, hx), ref)
    assert len(GRAPHS) > before


@pytest.mark.cuda
@cuda
def test_fusion_happens_on_cuda():
    report = loop_fusion_report("LSTM", batch=8, hidden=64, steps=5, device="cuda")
    assert report["fused"], report


def _ran_torch_lstm_kernel(layer, x, lengths=None) -> bool:
    with torch.profiler.profile() as prof:
        out, _ = layer(x, lengths=lengths) if lengths is not None else layer(x)
        out.sum().backward()
    return any(e.key == "aten::lstm" for e in prof.key_averages())


def test_script_cpu_plain_lstm_runs_torch_kernel_exactly():
    """The CPU fast path: a plain LSTM direction without lengths runs torch's own LSTM kernel (forward,
    backward and double backward exact against eager); lengths, layer norm or recurrent dropout keep the
    hand-written loops."""
    fast, eager = make_layer("lstm", "script"), make_layer("lstm", "eager")  # 2 bidirectional layers
    x, lengths, hx = parity_inputs(fast)
    assert _ran_torch_lstm_kernel(fast, x)
    assert not _ran_torch_lstm_kernel(fast, x, lengths)
    assert not _ran_torch_lstm_kernel(make_layer("lstm", "script", layer_norm=True), x)
    assert_close(outputs_and_grads(fast, x, None, hx), outputs_and_grads(eager, x, None, hx))
    xg = x.clone().requires_grad_()
    second = []
    for layer in (fast, eager):
        (g,) = torch.autograd.grad(layer(xg)[0].pow(2).sum(), xg, create_graph=True)
        second.append(list(torch.autograd.grad(g.pow(2).sum(), list(layer.parameters()))))
    assert_close(second[0], second[1])


def test_auto_measures_and_caches_when_enabled(monkeypatch: pytest.MonkeyPatch):
    """With SEQFORGE_AUTO_MEASURE=1 ``auto`` times the eligible backends once per shape bucket and runs one
    of them (which one wins is the machine's business); gradients and the random stream are untouched."""
    from seqforge.fused import backends

    monkeypatch.setenv(backends.MEASURE_ENV, "1")
    layer = seqforge.GRU(3, 5, backend="auto", recurrent_dropout=0.2)  # script or eager are eligible
    names = backends.eligible_backends(layer)
    assert names == ["script", "eager"]
    x = torch.randn(7, 2, 3)
    torch.manual_seed(1)
    layer(x)
    expected_next = torch.rand(3)
    torch.manual_seed(1)
    out, _ = layer(x)
    assert torch.equal(torch.rand(3), expected_next)  # measuring drew nothing from the user's random stream
    assert set(layer.backend_timings) == set(names) and layer.backend_used in names
    assert layer.backend_reason.startswith("measured") and all(p.grad is None for p in layer.parameters())
    key = (*backends.measure_key(layer, torch.randn(8, 2, 3), None), tuple(names))  # T=8: same bucket as 7
    assert backends._MEASURED[key][0] == layer.backend_used
    timings = dict(layer.backend_timings)
    layer(torch.randn(8, 2, 3))  # cached: no new measurement
    assert layer.backend_timings == timings
    monkeypatch.setenv(backends.MEASURE_ENV, "0")
    layer(x)
    assert layer.backend_used == "script" and not layer.backend_reason.startswith("measured")  # the rule
    monkeypatch.setenv(backends.MEASURE_ENV, "yes")
    with pytest.raises(ValueError, match=r"SEQFORGE_AUTO_MEASURE: expected '0' or '1', got 'yes'"):
        layer(x)
