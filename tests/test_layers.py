"""seqforge.RNN/LSTM/GRU against torch.nn: outputs, final states and every gradient, with and without
lengths, in both layouts and directions; plus lengths semantics, regularizers and bad input."""

import doctest
import random

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import seqforge
from seqforge.layers import recurrent as recurrent_module

TOL = {torch.float64: 1e-6, torch.float32: 1e-5}
MODES = [("LSTM", {}), ("GRU", {}), ("RNN", {"nonlinearity": "tanh"}), ("RNN", {"nonlinearity": "relu"})]


def _pair(mode, input_size, hidden, dtype, **kwargs):
    ref = getattr(nn, mode)(input_size, hidden, **kwargs).to(dtype)
    ours = getattr(seqforge, mode)(input_size, hidden, **kwargs).to(dtype)
    ours.load_state_dict(ref.state_dict())
    return ours, ref


def _flat(state):
    return state if isinstance(state, tuple) else (state,)


def _reference(ref, x, hx, lengths, batch_first):
    """torch.nn on pack_padded_sequence(enforce_sorted=False), padded back to x's length."""
    if lengths is None:
        return ref(x, hx)
    packed = pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=False)
    out, state = ref(packed, hx)
    out, _ = pad_packed_sequence(out, batch_first=batch_first, total_length=x.shape[1 if batch_first else 0])
    return out, state


# 12 random configurations per mode: sizes, layers 1-3, directions, layouts, lengths, dtypes.
CASES = []
_rng = random.Random(1234)
for mode, extra in MODES:
    for i in range(6):
        CASES.append(
            (mode, extra, {
                "input_size": _rng.randint(1, 6), "hidden": _rng.randint(1, 6), "num_layers": 1 + i % 3,
                "bidirectional": i % 2 == 0, "batch_first": i in (1, 2, 5), "bias": i != 4,
                "batch": _rng.randint(1, 4), "steps": _rng.randint(1, 6), "with_lengths": i in (0, 1, 3, 4),
                "dtype": torch.float64 if i < 4 else torch.float32,
            })
        )  # fmt: skip


@pytest.mark.parametrize("mode, extra, case", CASES)
def test_layer_matches_torch_forward_and_gradients(mode, extra, case):
    torch.manual_seed(0)
    dtype = case["dtype"]
    ours, ref = _pair(
        mode, case["input_size"], case["hidden"], dtype, num_layers=case["num_layers"], bias=case["bias"],
        batch_first=case["batch_first"], bidirectional=case["bidirectional"], **extra,
    )  # fmt: skip
    batch, steps = case["batch"], case["steps"]
    shape = (batch, steps, case["input_size"]) if case["batch_first"] else (steps, batch, case["input_size"])
    x = torch.randn(shape, dtype=dtype, requires_grad=True)
    lengths = None
    if case["with_lengths"]:
        lengths = torch.randint(1, steps + 1, (batch,))
        lengths[0] = steps
    layers = case["num_layers"] * (2 if case["bidirectional"] else 1)
    n_states = 2 if mode == "LSTM" else 1
    hx = tuple(torch.randn(layers, batch, case["hidden"], dtype=dtype, requires_grad=True) for _ in range(n_states))
    hx_arg = hx if mode == "LSTM" else hx[0]
    out_ours, st_ours = ours(x, hx_arg, lengths=lengths)
    out_ref, st_ref = _reference(ref, x, hx_arg, lengths, case["batch_first"])
    tol = TOL[dtype]
    torch.testing.assert_close(out_ours, out_ref, atol=tol, rtol=tol)
    for a, b in zip(_flat(st_ours), _flat(st_ref)):
        torch.testing.assert_close(a, b, atol=tol, rtol=tol)
    results_ours = [out_ours, *_flat(st_ours)]
    results_ref = [out_ref, *_flat(st_ref)]
    weights = [torch.randn_like(r) for r in results_ref]
    wrt_ours = [x, *hx, *ours.parameters()]
    wrt_ref = [x, *hx, *ref.parameters()]
    g_ours = torch.autograd.grad(sum((r * w).sum() for r, w in zip(results_ours, weights)), wrt_ours)
    g_ref = torch.autograd.grad(sum((r * w).sum() for r, w in zip(results_ref, weights)), wrt_ref)
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b, atol=tol, rtol=tol)


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN"])
def test_state_dict_round_trips_both_ways(mode):
    kwargs = {"num_layers": 2, "bidirectional": True}
    ours = getattr(seqforge, mode)(3, 4, **kwargs)
    ref = getattr(nn, mode)(3, 4, **kwargs)
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert "weight_hh_l1_reverse" in ours.state_dict()
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(5, 2, 3)
    torch.testing.assert_close(ours(x)[0], ref(x)[0])


@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
def test_padding_never_leaks_and_equals_per_sequence_runs(mode):
    torch.manual_seed(0)
    layer = getattr(seqforge, mode)(3, 5, num_layers=2, bidirectional=True, batch_first=True).double()
    lengths = torch.tensor([6, 1, 4])
    x = torch.randn(3, 6, 3, dtype=torch.float64)
    garbage = x.clone()
    for b, n in enumerate(lengths):
        garbage[b, n:] = 1e3  # padding content must not matter
    out, state = layer(x, lengths=lengths)
    out_g, state_g = layer(garbage, lengths=lengths)
    torch.testing.assert_close(out, out_g)
    for s, s_g in zip(_flat(state), _flat(state_g)):
        torch.testing.assert_close(s, s_g)
    for b, n in enumerate(lengths.tolist()):
        assert torch.all(out[b, n:] == 0)
        out_b, state_b = layer(x[b : b + 1, :n])
        torch.testing.assert_close(out[b : b + 1, :n], out_b)
        for s, s_b in zip(_flat(state), _flat(state_b)):
            torch.testing.assert_close(s[:, b : b + 1], s_b)


def test_edge_shapes_match_torch_length_one_batch_one_unbatched():
    torch.manual_seed(0)
    ours, ref = _pair("LSTM", 3, 4, torch.float64, num_layers=2, bidirectional=True)
    for x in (torch.randn(1, 1, 3, dtype=torch.float64), torch.randn(5, 1, 3, dtype=torch.float64),
              torch.randn(5, 3, dtype=torch.float64)):  # fmt: skip
        out, (h, c) = ours(x)
        out_r, (h_r, c_r) = ref(x)
        assert out.shape == out_r.shape and h.shape == h_r.shape
        torch.testing.assert_close(out, out_r)
        torch.testing.assert_close(c, c_r)
    # unbatched with an initial state
    h0 = torch.randn(4, 4, dtype=torch.float64)
    out, h = seqforge.GRU(3, 4, num_layers=2, bidirectional=True).double()(torch.randn(5, 3, dtype=torch.float64), h0)
    assert out.shape == (5, 8) and h.shape == (4, 4)


def test_packed_sequence_input_gives_packed_output_like_torch():
    torch.manual_seed(0)
    ours, ref = _pair("GRU", 3, 4, torch.float64, bidirectional=True, batch_first=True)
    x = torch.randn(3, 5, 3, dtype=torch.float64)
    packed = pack_padded_sequence(x, torch.tensor([2, 5, 3]), batch_first=True, enforce_sorted=False)
    out, h = ours(packed)
    out_r, h_r = ref(packed)
    assert isinstance(out, nn.utils.rnn.PackedSequence)
    torch.testing.assert_close(out.data, out_r.data)
    torch.testing.assert_close(h, h_r)


def test_lengths_accept_lists_and_any_integer_dtype():
    layer = seqforge.GRU(2, 3)
    x = torch.randn(4, 2, 2)
    a = layer(x, lengths=[4, 2])[0]
    b = layer(x, lengths=torch.tensor([4, 2], dtype=torch.int32))[0]
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda m: m(torch.randn(2, 3, 4, 5)), ValueError, "LSTM: Expected input to be 2D .* got 4D"),
        (lambda m: m(torch.randn(5, 2, 4)), ValueError, "input has 4 features .* expected input_size=3"),
        (
            lambda m: m(torch.randn(5, 2, 3), (torch.zeros(1, 2, 5), torch.zeros(1, 2, 6))),
            ValueError,
            r"h_0 must have shape \(1, 2, 6\) .* got \(1, 2, 5\)",
        ),
        (
            lambda m: m(torch.randn(5, 2, 3), (torch.zeros(1, 2, 6), torch.zeros(1, 3, 6))),
            ValueError,
            r"c_0 must have shape \(1, 2, 6\).*got \(1, 3, 6\)",
        ),
        (lambda m: m(torch.randn(5, 2, 3), torch.zeros(1, 2, 6)), TypeError, r"hx must be a tuple \(h_0, c_0\)"),
        (
            lambda m: m(torch.randn(5, 2, 3), lengths=torch.tensor([1.0, 2.0])),
            TypeError,
            "lengths must have an integer dtype, got torch.float32",
        ),
        (
            lambda m: m(torch.randn(5, 2, 3), lengths=torch.tensor([6, 2])),
            ValueError,
            r"lengths must lie in \[1, 5\] .* got min 2, max 6",
        ),
        (lambda m: m(torch.randn(5, 2, 3), lengths=torch.tensor([0, 2])), ValueError, r"lengths must lie in \[1, 5\]"),
        (
            lambda m: m(torch.randn(5, 2, 3), lengths=torch.tensor([5, 2, 1])),
            ValueError,
            r"lengths must have shape \(2,\)",
        ),
        (lambda m: m(torch.randn(5, 2, 3, dtype=torch.float64)), TypeError, "input dtype torch.float64"),
        (lambda m: m(torch.randn(0, 2, 3)), ValueError, "no time steps"),
        (
            lambda m: m(torch.randn(5, 2, 3), (torch.zeros(1, 2, 6, dtype=torch.float64),) * 2),
            TypeError,
            "h_0 is torch.float64",
        ),
    ],
)
def test_layer_bad_input_names_module_argument_and_values(call, exc, match):
    with pytest.raises(exc, match=match):
        call(seqforge.LSTM(3, 6))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"hidden_size": 0}, "hidden_size must be a positive int, got 0"),
        ({"num_layers": 0}, "num_layers must be a positive int"),
        ({"dropout": 1.5}, r"dropout must be a number in \[0, 1\]"),
        ({"zoneout": 1.0}, r"zoneout must be a number in \[0, 1\)"),
        ({"recurrent_dropout": -0.1}, "recurrent_dropout"),
        ({"backend": "nope"}, "backend: expected one of"),
        ({"forget_bias": 1.0, "bias": False}, "forget_bias needs an LSTM with bias=True"),
    ],
)
def test_layer_constructor_validates_options(kwargs, match):
    args = {"input_size": 3, "hidden_size": 4, **kwargs}
    with pytest.raises(ValueError, match=match):
        seqforge.LSTM(**args)


def test_make_recurrent_builds_each_cell_and_rejects_unknown():
    assert isinstance(seqforge.make_recurrent("lstm", 2, 3), seqforge.LSTM)
    relu = seqforge.make_recurrent("rnn_relu", 2, 3, num_layers=2)
    assert relu.mode == "RNN_RELU" and relu.num_layers == 2
    assert isinstance(seqforge.make_recurrent("GRU", 2, 3, layer_norm=True), seqforge.GRU)
    with pytest.raises(ValueError, match="cell must be one of"):
        seqforge.make_recurrent("transformer", 2, 3)


# ------------------------------------------------------------------ layer norm and regularizers
@pytest.mark.parametrize("mode, cell_cls", [("LSTM", seqforge.LayerNormLSTMCell), ("GRU", seqforge.LayerNormGRUCell)])
def test_layer_norm_layer_equals_loop_over_layer_norm_cells(mode, cell_cls):
    torch.manual_seed(0)
    layer = getattr(seqforge, mode)(3, 4, layer_norm=True).double()
    cell = cell_cls(3, 4).double()
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_()
    cell.load_state_dict({k.removesuffix("_l0"): v for k, v in layer.state_dict().items()})
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    out, state = layer(x)
    s = None
    for t in range(5):
        s = cell(x[t], s)
        h = s[0] if mode == "LSTM" else s
        torch.testing.assert_close(out[t], h)


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("options", [{"layer_norm": True}, {"recurrent_dropout": 0.3}, {"zoneout": 0.3}])
def test_regularized_layers_pass_gradcheck(mode, options):
    torch.manual_seed(0)
    layer = getattr(seqforge, mode)(2, 3, num_layers=2, bidirectional=True, dropout=0.2, **options).double()
    x = torch.randn(4, 2, 2, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([4, 2])

    def run(x, *params):
        torch.manual_seed(1)  # the same dropout/zoneout masks at every evaluation
        out, state = layer(x, lengths=lengths)
        return out, *_flat(state)

    assert torch.autograd.gradcheck(run, (x, *layer.parameters()))


def test_regularizers_are_off_or_deterministic_in_eval():
    torch.manual_seed(0)
    reg = seqforge.LSTM(3, 4, num_layers=2, dropout=0.5, recurrent_dropout=0.5).double()
    plain = seqforge.LSTM(3, 4, num_layers=2).double()
    plain.load_state_dict(reg.state_dict())
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    reg.eval()
    torch.testing.assert_close(reg(x)[0], plain(x)[0])
    reg.train()
    assert not torch.allclose(reg(x)[0], plain(x)[0])


def test_zoneout_uses_expected_update_in_eval_and_random_masks_in_training():
    torch.manual_seed(0)
    p = 0.25
    layer = seqforge.GRU(3, 4, zoneout=p).double().eval()
    cell = seqforge.GRUCell(3, 4).double()
    cell.load_state_dict({k.removesuffix("_l0"): v for k, v in layer.state_dict().items()})
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    h = torch.zeros(2, 4, dtype=torch.float64)
    out = layer(x)[0]
    for t in range(5):
        h = p * h + (1 - p) * cell(x[t], h)
        torch.testing.assert_close(out[t], h)
    layer.train()
    assert not torch.allclose(layer(x)[0], layer(x)[0])


def test_recurrent_dropout_mask_is_constant_over_time():
    # h_t = relu(x_t + m * h_{t-1}) with x_t = 1 and identity weights: a unit whose mask is 0 stays at 1,
    # a unit whose mask is 1/(1-p) grows at every step. A mask redrawn per step would break the pattern.
    hidden, p = 64, 0.5
    layer = seqforge.RNN(hidden, hidden, nonlinearity="relu", recurrent_dropout=p).train()
    with torch.no_grad():
        layer.weight_ih_l0.copy_(torch.eye(hidden))
        layer.weight_hh_l0.copy_(torch.eye(hidden))
        layer.bias_ih_l0.zero_()
        layer.bias_hh_l0.zero_()
    torch.manual_seed(0)
    out = layer(torch.ones(10, 1, hidden))[0][:, 0]  # (T, H)
    dropped = (out == 1.0).all(dim=0)
    growing = (out[1:] > out[:-1]).all(dim=0)
    assert torch.all(dropped | growing)
    assert 0 < int(dropped.sum()) < hidden


def test_forget_bias_initializes_the_forget_gate():
    layer = seqforge.LSTM(3, 4, num_layers=2, bidirectional=True, forget_bias=1.0)
    for name, param in layer.named_parameters():
        if name.startswith("bias_ih"):
            assert torch.all(param[4:8] == 1.0)
        if name.startswith("bias_hh"):
            assert torch.all(param[4:8] == 0.0)


# ------------------------------------------------------------------ truncated BPTT
def test_state_carried_across_windows_equals_one_pass_and_detach_cuts_gradients():
    torch.manual_seed(0)
    layer = seqforge.LSTM(2, 3, num_layers=2, batch_first=True).double()
    x = torch.randn(2, 8, 2, dtype=torch.float64, requires_grad=True)
    full, _ = layer(x)
    state = None
    outs = []
    for start in range(0, 8, 3):
        out, state = layer(x[:, start : start + 3], state)
        outs.append(out)
        state = seqforge.detach_state(state)
    torch.testing.assert_close(torch.cat(outs, dim=1), full)
    outs[-1].sum().backward()
    assert torch.all(x.grad[:, :6] == 0) and torch.any(x.grad[:, 6:] != 0)
    assert seqforge.detach_state(None) is None
    assert not seqforge.detach_state(torch.ones(1, requires_grad=True) * 2).requires_grad


def test_layer_docstring_examples_run():
    result = doctest.testmod(recurrent_module)
    assert result.attempted > 0 and result.failed == 0


def test_backend_can_be_switched_after_construction_and_is_checked():
    layer = seqforge.LSTM(3, 4)
    with pytest.raises(ValueError, match="backend: expected one of"):
        layer.backend = "nope"
    assert layer.backend == "eager" and layer.backend_used == "eager"
