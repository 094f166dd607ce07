"""Cells against torch.nn cells: same state_dict, same outputs and gradients; layer-norm cells checked
against an independent formula and with gradcheck."""

import doctest

import pytest
import torch
from torch import nn

import seqforge
from seqforge.cells import cells as cells_module

# (ours, torch's, constructor kwargs)
PLAIN = [
    (seqforge.RNNCell, nn.RNNCell, {"nonlinearity": "tanh"}),
    (seqforge.RNNCell, nn.RNNCell, {"nonlinearity": "relu"}),
    (seqforge.LSTMCell, nn.LSTMCell, {}),
    (seqforge.GRUCell, nn.GRUCell, {}),
]
TOL = {torch.float64: 1e-10, torch.float32: 1e-5}


def _as_tuple(out):
    return out if isinstance(out, tuple) else (out,)


def _state(ref_cls, batch, hidden, dtype):
    if ref_cls is nn.LSTMCell:
        return tuple(torch.randn(batch, hidden, dtype=dtype, requires_grad=True) for _ in range(2))
    return torch.randn(batch, hidden, dtype=dtype, requires_grad=True)


@pytest.mark.parametrize("ours_cls, ref_cls, kwargs", PLAIN)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("bias", [True, False])
def test_cell_matches_torch(ours_cls, ref_cls, kwargs, dtype, bias):
    torch.manual_seed(0)
    ref = ref_cls(5, 7, bias=bias, **kwargs).to(dtype)
    ours = ours_cls(5, 7, bias=bias, **kwargs).to(dtype)
    ours.load_state_dict(ref.state_dict())
    assert list(ours.state_dict()) == list(ref.state_dict())
    x = torch.randn(3, 5, dtype=dtype, requires_grad=True)
    hx = _state(ref_cls, 3, 7, dtype)
    out_ours, out_ref = _as_tuple(ours(x, hx)), _as_tuple(ref(x, hx))
    for a, b in zip(out_ours, out_ref):
        torch.testing.assert_close(a, b, atol=TOL[dtype], rtol=TOL[dtype])
    weights = [torch.randn_like(o) for o in out_ref]
    inputs = [x, *_as_tuple(hx)]
    grads_ours = torch.autograd.grad(
        sum((o * w).sum() for o, w in zip(out_ours, weights)), inputs + list(ours.parameters())
    )
    grads_ref = torch.autograd.grad(
        sum((o * w).sum() for o, w in zip(out_ref, weights)), inputs + list(ref.parameters())
    )
    for a, b in zip(grads_ours, grads_ref):
        torch.testing.assert_close(a, b, atol=TOL[dtype], rtol=TOL[dtype])


@pytest.mark.parametrize("ours_cls, ref_cls, kwargs", PLAIN)
def test_cell_state_dict_round_trips_to_torch_and_unbatched_input(ours_cls, ref_cls, kwargs):
    ours = ours_cls(4, 6, **kwargs)
    ref = ref_cls(4, 6, **kwargs)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(4)
    for a, b in zip(_as_tuple(ours(x)), _as_tuple(ref(x))):
        assert a.shape == (6,)
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("ours_cls", [seqforge.RNNCell, seqforge.LSTMCell, seqforge.GRUCell])
def test_cell_init_is_uniform_in_torch_bound(ours_cls):
    torch.manual_seed(0)
    cell = ours_cls(30, 100)
    for p in cell.parameters():
        assert p.abs().max() <= 0.1 and p.abs().max() > 0.09  # U(-1/sqrt(H), 1/sqrt(H)), H=100


def _ln(v, w, b):
    return nn.functional.layer_norm(v, (v.shape[-1],), w, b, 1e-5)


def test_layer_norm_lstm_cell_follows_its_documented_equations():
    torch.manual_seed(0)
    cell = seqforge.LayerNormLSTMCell(5, 4).double()
    with torch.no_grad():
        for p in cell.parameters():
            p.normal_()
    x, h, c = (torch.randn(3, n, dtype=torch.float64) for n in (5, 4, 4))
    gates = (_ln(x @ cell.weight_ih.T, cell.ln_ih_weight, cell.ln_ih_bias) + cell.bias_ih
             + _ln(h @ cell.weight_hh.T, cell.ln_hh_weight, cell.ln_hh_bias) + cell.bias_hh)  # fmt: skip
    i, f, g, o = gates.chunk(4, dim=1)
    c_ref = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h_ref = torch.sigmoid(o) * torch.tanh(_ln(c_ref, cell.ln_cell_weight, cell.ln_cell_bias))
    h_new, c_new = cell(x, (h, c))
    torch.testing.assert_close(h_new, h_ref)
    torch.testing.assert_close(c_new, c_ref)


def test_layer_norm_gru_cell_follows_its_documented_equations():
    torch.manual_seed(0)
    cell = seqforge.LayerNormGRUCell(5, 4).double()
    with torch.no_grad():
        for p in cell.parameters():
            p.normal_()
    x, h = torch.randn(3, 5, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    gi = _ln(x @ cell.weight_ih.T, cell.ln_ih_weight, cell.ln_ih_bias) + cell.bias_ih
    gh = _ln(h @ cell.weight_hh.T, cell.ln_hh_weight, cell.ln_hh_bias) + cell.bias_hh
    r = torch.sigmoid(gi[:, :4] + gh[:, :4])
    z = torch.sigmoid(gi[:, 4:8] + gh[:, 4:8])
    n = torch.tanh(gi[:, 8:] + r * gh[:, 8:])
    torch.testing.assert_close(cell(x, h), (1 - z) * n + z * h)


@pytest.mark.parametrize("cls", [seqforge.LayerNormLSTMCell, seqforge.LayerNormGRUCell])
def test_layer_norm_cells_pass_gradcheck(cls):
    torch.manual_seed(0)
    cell = cls(3, 4).double()
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    h = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    if cls is seqforge.LayerNormLSTMCell:
        c = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda x, h, c, *p: cell(x, (h, c)), (x, h, c, *cell.parameters()))
    else:
        assert torch.autograd.gradcheck(lambda x, h, *p: cell(x, h), (x, h, *cell.parameters()))
    assert {"ln_ih_weight", "ln_hh_bias"} <= set(cell.state_dict())


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda c: c(torch.randn(2, 3, 5)), "Expected input to be 1D or 2D, got 3D"),
        (lambda c: c(torch.randn(2, 4)), "input has 4 features, expected input_size=5"),
        (
            lambda c: c(torch.randn(2, 5), (torch.zeros(2, 6), torch.zeros(2, 7))),
            r"hx\[0\] \(h\) must have shape \(2, 7\)",
        ),
        (lambda c: c(torch.randn(2, 5, dtype=torch.float64)), "input dtype torch.float64"),
        (lambda c: c(torch.randn(2, 5), torch.zeros(2, 7)), "hx must be a tuple"),
        (lambda c: c([[1.0] * 5]), "input must be a Tensor"),
    ],
)
def test_cell_bad_input_names_the_problem(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call(seqforge.LSTMCell(5, 7))


def test_cell_constructor_rejects_bad_sizes():
    # issue 12: hidden_size=0 is accepted as torch does (tests/test_torch_suite.py); negative sizes are refused
    with pytest.raises(ValueError, match="GRUCell: hidden_size must be a non-negative int, got -1"):
        seqforge.GRUCell(3, -1)
    with pytest.raises(ValueError, match="GRUCell: input_size must be a positive int, got 0"):
        seqforge.GRUCell(0, 3)
    with pytest.raises(ValueError, match="nonlinearity must be one of"):
        seqforge.RNNCell(3, 4, nonlinearity="sigmoid")


def test_cell_docstring_examples_run():
    result = doctest.testmod(cells_module)
    assert result.attempted > 0 and result.failed == 0
