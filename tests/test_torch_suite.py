"""PyTorch's own recurrent tests (the RNN/LSTM/GRU and cell tests of ``test/test_nn.py`` and the RNN entries of
``torch/testing/_internal/common_modules.py``), re-expressed here in our own code.

Every test runs on ``torch.nn`` (the control: a case that fails there is a wrong test) and on seqforge; layer
tests run seqforge's ``eager`` and ``script`` backends. A drop-in replacement passes every case.
"""

from __future__ import annotations

import copy
import io
import math
import pickle
import subprocess
import sys
import warnings
from typing import Tuple  # noqa: UP035  (TorchScript reads the user modules' annotations)

import pytest
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import seqforge

LIBS = ["torch", "eager", "script"]
CELL_LIBS = ["torch", "seqforge"]
MODES = ["RNN", "LSTM", "GRU"]
CELLS = ["RNNCell", "LSTMCell", "GRUCell"]
TOL = {"atol": 1e-10, "rtol": 1e-8}  # float64 against torch


def layer(lib: str, mode: str, *args, **kwargs) -> nn.Module:
    """``torch.nn.<mode>`` or ``seqforge.<mode>`` on backend ``lib`` with torch's arguments."""
    if lib == "torch":
        return getattr(nn, mode)(*args, **kwargs)
    return getattr(seqforge, mode)(*args, backend=lib, **kwargs)


def cell(lib: str, name: str, *args, **kwargs) -> nn.Module:
    return getattr(nn if lib == "torch" else seqforge, name)(*args, **kwargs)


def twin(lib: str, mode: str, *args, **kwargs) -> tuple[nn.Module, nn.Module]:
    """A float64 ``torch.nn`` reference and the module under test with the same weights."""
    torch.manual_seed(0)
    ref = getattr(nn, mode)(*args, dtype=torch.float64, **kwargs)
    ours = layer(lib, mode, *args, dtype=torch.float64, **kwargs)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def states(out: tuple) -> list[torch.Tensor]:
    """The output and every state tensor of a layer's result, flat."""
    output, hx = out
    return [output, *(hx if isinstance(hx, tuple) else (hx,))]


def zero_state(mode: str, shape: tuple[int, ...], c_shape: tuple[int, ...] | None = None, dtype=torch.float64):
    h = torch.randn(shape, dtype=dtype)
    return (h, torch.randn(c_shape or shape, dtype=dtype)) if mode == "LSTM" else h


def close(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.shape == y.shape
        torch.testing.assert_close(x, y, **TOL)


# ---------------------------------------------------------------------------------------------- layers: shapes
@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_output_and_state_shapes(lib, mode, bidirectional):
    m = layer(lib, mode, 5, 7, num_layers=2, bidirectional=bidirectional)
    d = 2 if bidirectional else 1
    out, hx = m(torch.randn(4, 3, 5))
    assert out.shape == (4, 3, d * 7)
    for s in hx if mode == "LSTM" else (hx,):
        assert s.shape == (2 * d, 3, 7)


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("mode", MODES)
def test_batch_first_shapes_and_equivalence(lib, mode):
    ref, ours = twin(lib, mode, 3, 4, batch_first=True)
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    out, _ = ours(x)
    assert out.shape == (2, 5, 4)
    close(states(ours(x)), states(ref(x)))


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("mode", MODES)
def test_unbatched_input_shapes(lib, mode):
    m = layer(lib, mode, 3, 4, num_layers=2, bidirectional=True)
    out, hx = m(torch.randn(6, 3))
    assert out.shape == (6, 8)
    for s in hx if mode == "LSTM" else (hx,):
        assert s.shape == (4, 4)


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("mode", MODES)
def test_unbatched_equals_batch_of_one(lib, mode):
    ref, ours = twin(lib, mode, 3, 4, num_layers=2)
    x = torch.randn(5, 3, dtype=torch.float64)
    hx = zero_state(mode, (2, 4))
    un = states(ours(x, hx))
    batched_hx = tuple(s.unsqueeze(1) for s in hx) if mode == "LSTM" else hx.unsqueeze(1)
    one = [s.squeeze(1) for s in states(ours(x.unsqueeze(1), batched_hx))]
    close(un, one)
    close(un, states(ref(x, hx)))


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("mode", MODES)
def test_sequence_of_length_one_and_batch_of_one(lib, mode):
    ref, ours = twin(lib, mode, 3, 4)
    for shape in ((1, 2, 3), (4, 1, 3), (1, 1, 3)):
        x = torch.randn(shape, dtype=torch.float64)
        close(states(ours(x)), states(ref(x)))


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("mode", MODES)
def test_last_output_equals_final_hidden_state(lib, mode):
    m = layer(lib, mode, 3, 4, num_layers=2)
    out, hx = m(torch.randn(5, 2, 3))
    h = hx[0] if mode == "LSTM" else hx
    torch.testing.assert_close(out[-1], h[-1])


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("mode", MODES)
def test_bidirectional_final_states_are_the_ends_of_each_direction(lib, mode):
    m = layer(lib, mode, 3, 4, bidirectional=True)
    out, hx = m(torch.randn(5, 2, 3))
    h = hx[0] if mode == "LSTM" else hx
    torch.testing.assert_close(out[-1, :, :4], h[0])  # forward ends at T-1
    torch.testing.assert_close(out[0, :, 4:], h[1])  # reverse ends at step 0


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("mode", MODES)
def test_reverse_direction_is_the_forward_cell_on_the_flipped_sequence(lib, mode):
    bi = layer(lib, mode, 3, 4, bidirectional=True, dtype=torch.float64)
    uni = getattr(nn, mode)(3, 4, dtype=torch.float64)
    uni.load_state_dict({k.replace("_reverse", ""): v for k, v in bi.state_dict().items() if "_reverse" in k})
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    out, _ = bi(x)
    rev, _ = uni(x.flip(0))
    torch.testing.assert_close(out[:, :, 4:], rev.flip(0), **TOL)


# ---------------------------------------------------------------------------------------------- layers: numerics
@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("options", [{}, {"num_layers": 2, "bidirectional": True}, {"bias": False}])
def test_forward_and_gradients_equal_torch_in_float64(lib, mode, options):
    ref, ours = twin(lib, mode, 3, 5, **options)
    x = torch.randn(6, 2, 3, dtype=torch.float64, requires_grad=True)
    d = 2 if options.get("bidirectional") else 1
    n = options.get("num_layers", 1) * d
    hx = zero_state(mode, (n, 2, 5))
    got, want = states(ours(x, hx)), states(ref(x, hx))
    close(got, want)
    grads_got = torch.autograd.grad(sum(s.sum() for s in got), [x, *ours.parameters()])
    grads_want = torch.autograd.grad(sum(s.sum() for s in want), [x, *ref.parameters()])
    close(list(grads_got), list(grads_want))


@pytest.mark.parametrize("lib", LIBS)
def test_lstm_equations_by_hand(lib):
    m = layer(lib, "LSTM", 3, 2, dtype=torch.float64)
    x = torch.randn(4, 1, 3, dtype=torch.float64)
    h = c = torch.zeros(1, 2, dtype=torch.float64)
    outs = []
    for t in range(4):
        g = x[t] @ m.weight_ih_l0.T + m.bias_ih_l0 + h @ m.weight_hh_l0.T + m.bias_hh_l0
        i, f, gg, o = g.chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(gg)
        h = torch.sigmoid(o) * torch.tanh(c)
        outs.append(h)
    out, (h_n, c_n) = m(x)
    torch.testing.assert_close(out, torch.stack(outs), **TOL)
    torch.testing.assert_close(c_n[0], c, **TOL)


@pytest.mark.parametrize("lib", LIBS)
def test_gru_equations_by_hand(lib):
    m = layer(lib, "GRU", 3, 2, dtype=torch.float64)
    x = torch.randn(4, 1, 3, dtype=torch.float64)
    h = torch.zeros(1, 2, dtype=torch.float64)
    for t in range(4):
        gi = x[t] @ m.weight_ih_l0.T + m.bias_ih_l0
        gh = h @ m.weight_hh_l0.T + m.bias_hh_l0
        r = torch.sigmoid(gi[:, :2] + gh[:, :2])
        z = torch.sigmoid(gi[:, 2:4] + gh[:, 2:4])
        n = torch.tanh(gi[:, 4:] + r * gh[:, 4:])
        h = (1 - z) * n + z * h
    torch.testing.assert_close(m(x)[1][0], h, **TOL)


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_rnn_equations_by_hand(lib, nonlinearity):
    m = layer(lib, "RNN", 3, 2, nonlinearity=nonlinearity, dtype=torch.float64)
    act = torch.tanh if nonlinearity == "tanh" else torch.relu
    x = torch.randn(4, 1, 3, dtype=torch.float64)
    h = torch.zeros(1, 2, dtype=torch.float64)
    for t in range(4):
        h = act(x[t] @ m.weight_ih_l0.T + m.bias_ih_l0 + h @ m.weight_hh_l0.T + m.bias_hh_l0)
    torch.testing.assert_close(m(x)[1][0], h, **TOL)


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("mode", MODES)
def test_omitted_hx_equals_zeros(lib, mode):
    m = layer(lib, mode, 3, 4, num_layers=2)
    x = torch.randn(5, 2, 3)
    zeros = torch.zeros(2, 2, 4)
    hx = (zeros, zeros) if mode == "LSTM" else zeros
    close(states(m(x)), states(m(x, hx)))


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("mode", MODES)
def test_non_contiguous_input_and_expanded_hx(lib, mode):
    ref, ours = twin(lib, mode, 3, 4)
    x = torch.randn(2, 5, 3, dtype=torch.float64).transpose(0, 1)
    h = torch.randn(1, 1, 4, dtype=torch.float64).expand(1, 2, 4)
    hx = (h, h) if mode == "LSTM" else h
    assert not x.is_contiguous()
    close(states(ours(x, hx)), states(ref(x, hx)))


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("mode", MODES)
def test_gradient_reaches_hx_and_every_parameter(lib, mode):
    m = layer(lib, mode, 3, 4, num_layers=2, bidirectional=True)
    h = torch.randn(4, 2, 4, requires_grad=True)
    hx = (h, torch.randn(4, 2, 4)) if mode == "LSTM" else h
    out, _ = m(torch.randn(5, 2, 3), hx)
    out.sum().backward()
    assert h.grad is not None and h.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("mode", MODES)
def test_frozen_parameters_still_run_and_give_input_gradients(lib, mode):
    m = layer(lib, mode, 3, 4).requires_grad_(False)
    x = torch.randn(5, 2, 3, requires_grad=True)
    m(x)[0].sum().backward()
    assert x.grad is not None and all(p.grad is None for p in m.parameters())


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("mode", MODES)
def test_no_grad_and_inference_mode(lib, mode):
    m = layer(lib, mode, 3, 4)
    x = torch.randn(5, 2, 3)
    want = m(x)[0].detach()
    with torch.no_grad():
        torch.testing.assert_close(m(x)[0], want)
    with torch.inference_mode():
        torch.testing.assert_close(m(x)[0], want)


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("mode", MODES)
def test_double_and_float_conversion(lib, mode):
    m = layer(lib, mode, 3, 4).double()
    out, _ = m(torch.randn(2, 2, 3, dtype=torch.float64))
    assert out.dtype == torch.float64 and all(p.dtype == torch.float64 for p in m.parameters())
    out, _ = m.float()(torch.randn(2, 2, 3))
    assert out.dtype == torch.float32


# ---------------------------------------------------------------------------------------------- layers: parameters
@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bias", [True, False])
def test_parameter_names_shapes_and_order_are_torch_s(lib, mode, bias):
    ref = getattr(nn, mode)(3, 4, num_layers=2, bias=bias, bidirectional=True)
    m = layer(lib, mode, 3, 4, num_layers=2, bias=bias, bidirectional=True)
    assert [(n, p.shape) for n, p in m.named_parameters()] == [(n, p.shape) for n, p in ref.named_parameters()]
    assert list(m.state_dict()) == list(ref.state_dict())


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("mode", MODES)
def test_init_is_uniform_within_one_over_sqrt_hidden(lib, mode):
    m = layer(lib, mode, 3, 16, num_layers=2)
    bound = 1 / math.sqrt(16)
    for p in m.parameters():
        assert p.abs().max() <= bound and p.std() > bound / 4
    before = [p.clone() for p in m.parameters()]
    m.reset_parameters()
    assert all(not torch.equal(a, b) for a, b in zip(before, m.parameters()))


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("mode", MODES)
def test_state_dict_from_torch_gives_torch_s_numbers(lib, mode):
    ref, ours = twin(lib, mode, 3, 4, num_layers=2, bidirectional=True)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    close(states(ours(x)), states(ref(x)))


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("mode", MODES)
def test_torch_loads_our_state_dict(lib, mode):
    ours = layer(lib, mode, 3, 4, num_layers=2, dtype=torch.float64)
    ref = getattr(nn, mode)(3, 4, num_layers=2, dtype=torch.float64)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    close(states(ref(x)), states(ours(x)))


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("mode", MODES)
def test_torch_save_and_load_of_state_dict(lib, mode):
    m = layer(lib, mode, 3, 4)
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)
    other = layer(lib, mode, 3, 4)
    other.load_state_dict(torch.load(io.BytesIO(buf.getvalue())))
    x = torch.randn(5, 2, 3)
    close(states(other(x)), states(m(x)))


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("mode", MODES)
def test_deepcopy_and_pickle_keep_numbers_and_independence(lib, mode):
    m = layer(lib, mode, 3, 4)
    x = torch.randn(5, 2, 3)
    for clone in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        close(states(clone(x)), states(m(x)))
        with torch.no_grad():
            next(clone.parameters()).add_(1.0)
        assert not torch.allclose(clone(x)[0], m(x)[0])


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("mode", MODES)
def test_all_weights_lists_each_layer_and_direction(lib, mode):
    m = layer(lib, mode, 3, 4, num_layers=2, bidirectional=True)
    ref = getattr(nn, mode)(3, 4, num_layers=2, bidirectional=True)
    assert [[w.shape for w in ws] for ws in m.all_weights] == [[w.shape for w in ws] for ws in ref.all_weights]
    assert m.all_weights[1][0] is m.weight_ih_l0_reverse


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("mode", MODES)
def test_flatten_parameters_is_callable_and_keeps_numbers(lib, mode):
    m = layer(lib, mode, 3, 4)
    x = torch.randn(5, 2, 3)
    before = m(x)[0]
    m.flatten_parameters()
    torch.testing.assert_close(m(x)[0], before)


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("mode", MODES)
def test_assigned_parameter_is_used(lib, mode):
    m = layer(lib, mode, 3, 4)
    with torch.no_grad():
        m.weight_ih_l0.zero_()
    out_a, _ = m(torch.randn(5, 2, 3))
    out_b, _ = m(torch.randn(5, 2, 3))
    torch.testing.assert_close(out_a, out_b)  # the input is cut: the output depends on the biases only


# ---------------------------------------------------------------------------------------------- layers: repr
@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("options", [{}, {"num_layers": 2, "bias": False, "batch_first": True, "dropout": 0.5,
                                          "bidirectional": True}])  # fmt: skip
def test_repr_is_torch_s(lib, mode, options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = layer(lib, mode, 3, 4, **options)
        ref = getattr(nn, mode)(3, 4, **options)
    text = repr(m).replace(f", backend='{lib}'", "")
    assert text == repr(ref)


# ---------------------------------------------------------------------------------------------- layers: packed
def _packed(x, lengths, enforce_sorted=True):
    return pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=enforce_sorted)


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("mode", MODES)
def test_packed_sequence_equals_torch(lib, mode):
    ref, ours = twin(lib, mode, 3, 4, num_layers=2, bidirectional=True)
    x = torch.randn(5, 3, 3, dtype=torch.float64)
    packed = _packed(x, [5, 3, 2])
    got, want = ours(packed), ref(packed)
    assert isinstance(got[0], nn.utils.rnn.PackedSequence)
    close([got[0].data, *states((got[0].data, got[1]))[1:]], [want[0].data, *states((want[0].data, want[1]))[1:]])


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("mode", MODES)
def test_unsorted_packed_sequence_equals_torch(lib, mode):
    ref, ours = twin(lib, mode, 3, 4, bidirectional=True)
    x = torch.randn(5, 3, 3, dtype=torch.float64)
    packed = _packed(x, [2, 5, 3], enforce_sorted=False)
    got, want = ours(packed), ref(packed)
    close([pad_packed_sequence(got[0])[0], *states(got)[1:]], [pad_packed_sequence(want[0])[0], *states(want)[1:]])


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("mode", MODES)
def test_packed_sequence_equals_each_sequence_alone(lib, mode):
    m = layer(lib, mode, 3, 4, dtype=torch.float64)
    x = torch.randn(5, 3, 3, dtype=torch.float64)
    lengths = [5, 3, 2]
    out, hx = m(_packed(x, lengths))
    padded, _ = pad_packed_sequence(out)
    h = hx[0] if mode == "LSTM" else hx
    for b, n in enumerate(lengths):
        alone, alone_hx = m(x[:n, b : b + 1])
        torch.testing.assert_close(padded[:n, b : b + 1], alone, **TOL)
        assert padded[n:, b].abs().sum() == 0
        torch.testing.assert_close(h[:, b], (alone_hx[0] if mode == "LSTM" else alone_hx)[:, 0], **TOL)


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("mode", MODES)
def test_packed_sequence_with_batch_first(lib, mode):
    ref, ours = twin(lib, mode, 3, 4, batch_first=True)
    x = torch.randn(3, 5, 3, dtype=torch.float64)
    packed = pack_padded_sequence(x, torch.tensor([5, 4, 1]), batch_first=True)
    got, want = ours(packed), ref(packed)
    close([got[0].data, *states(got)[1:]], [want[0].data, *states(want)[1:]])


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("mode", MODES)
def test_packed_sequence_gradients_equal_torch(lib, mode):
    ref, ours = twin(lib, mode, 3, 4)
    x = torch.randn(5, 3, 3, dtype=torch.float64)
    packed = _packed(x, [5, 3, 2])
    g_got = torch.autograd.grad(ours(packed)[0].data.sum(), list(ours.parameters()))
    g_want = torch.autograd.grad(ref(packed)[0].data.sum(), list(ref.parameters()))
    close(list(g_got), list(g_want))


# ---------------------------------------------------------------------------------------------- layers: dropout
@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("mode", MODES)
def test_dropout_acts_in_training_only(lib, mode):
    m = layer(lib, mode, 3, 8, num_layers=2, dropout=0.5)
    x = torch.randn(5, 2, 3)
    m.eval()
    torch.testing.assert_close(m(x)[0], m(x)[0])
    evaluated = m(x)[0]
    m.train()
    assert not torch.allclose(m(x)[0], evaluated)


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("mode", MODES)
def test_dropout_one_cuts_the_input_of_the_last_layer(lib, mode):
    m = layer(lib, mode, 3, 4, num_layers=2, dropout=1.0).train()
    out_a, _ = m(torch.randn(5, 2, 3))
    out_b, _ = m(torch.randn(5, 2, 3))
    torch.testing.assert_close(out_a, out_b)  # the last layer sees zeros whatever the input


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("mode", MODES)
def test_dropout_with_one_layer_warns(lib, mode):
    with pytest.warns(UserWarning, match="dropout"):
        layer(lib, mode, 3, 4, dropout=0.3)


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("dropout", [-0.1, 1.5, True, "0.5"])
def test_dropout_out_of_range_or_not_a_number_is_refused(lib, dropout):
    with pytest.raises(ValueError, match="dropout"):
        layer(lib, "LSTM", 3, 4, num_layers=2, dropout=dropout)


# ---------------------------------------------------------------------------------------------- layers: errors
@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("mode", MODES)
def test_input_with_wrong_feature_size_raises_runtime_error(lib, mode):
    with pytest.raises(RuntimeError, match="input_size|input.size"):
        layer(lib, mode, 3, 4)(torch.randn(5, 2, 7))


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dim", [1, 4])
def test_input_with_wrong_number_of_dimensions_raises_value_error(lib, mode, dim):
    with pytest.raises(ValueError, match="2D|3D"):
        layer(lib, mode, 3, 4)(torch.randn(*([2] * (dim - 1)), 3))


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("mode", MODES)
def test_input_dtype_other_than_parameters_raises_value_error(lib, mode):
    with pytest.raises(ValueError, match="float64|Double|type"):
        layer(lib, mode, 3, 4)(torch.randn(5, 2, 3, dtype=torch.float64))


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", [(2, 2, 4), (1, 3, 4), (1, 2, 5)])
def test_hidden_state_of_wrong_shape_raises_runtime_error(lib, mode, shape):
    m = layer(lib, mode, 3, 4)
    h = torch.randn(shape)
    hx = (h, torch.randn(1, 2, 4)) if mode == "LSTM" else h
    with pytest.raises(RuntimeError, match="hidden|hx|h_0|size|shape"):
        m(torch.randn(5, 2, 3), hx)


@pytest.mark.parametrize("lib", LIBS)
def test_lstm_cell_state_of_wrong_shape_raises_runtime_error(lib):
    m = layer(lib, "LSTM", 3, 4)
    with pytest.raises(RuntimeError, match="c_0|cell|hx|size|shape"):
        m(torch.randn(5, 2, 3), (torch.randn(1, 2, 4), torch.randn(1, 2, 5)))


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("mode", MODES)
def test_unbatched_input_with_batched_hx_raises_runtime_error(lib, mode):
    m = layer(lib, mode, 3, 4)
    h = torch.randn(1, 1, 4)
    hx = (h, h) if mode == "LSTM" else h
    with pytest.raises(RuntimeError):
        m(torch.randn(5, 3), hx)


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("arg", ["bias", "batch_first"])
@pytest.mark.parametrize("value", [0, 1, "True"])
def test_bool_options_refuse_other_types(lib, mode, arg, value):
    with pytest.raises(TypeError, match=arg):
        layer(lib, mode, 3, 4, **{arg: value})


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("arg", ["input_size", "hidden_size"])
def test_sizes_must_be_ints(lib, mode, arg):
    sizes = {"input_size": 3, "hidden_size": 4, arg: 4.0}
    with pytest.raises(TypeError, match=arg):
        layer(lib, mode, **sizes)


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("arg", ["input_size", "hidden_size", "num_layers"])
def test_sizes_must_be_positive(lib, mode, arg):
    sizes = {"input_size": 3, "hidden_size": 4, "num_layers": 1, arg: 0}
    with pytest.raises(ValueError, match=arg):
        layer(lib, mode, **sizes)


@pytest.mark.parametrize("lib", LIBS)
def test_rnn_refuses_unknown_nonlinearity(lib):
    with pytest.raises(ValueError, match="nonlinearity|mode"):
        layer(lib, "RNN", 3, 4, nonlinearity="sigmoid")


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("mode", ["RNN", "GRU"])
def test_proj_size_is_refused_outside_lstm(lib, mode):
    with pytest.raises(ValueError, match="proj_size"):
        layer(lib, mode, 3, 4, proj_size=2)


# ---------------------------------------------------------------------------------------------- cells
@pytest.mark.parametrize("lib", CELL_LIBS)
@pytest.mark.parametrize("name", CELLS)
def test_cell_shapes_batched_and_unbatched(lib, name):
    c = cell(lib, name, 3, 5)
    for x in (torch.randn(2, 3), torch.randn(3)):
        out = c(x)
        for s in out if name == "LSTMCell" else (out,):
            assert s.shape == x.shape[:-1] + (5,)


@pytest.mark.parametrize("lib", CELL_LIBS)
@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize("bias", [True, False])
def test_cell_equals_torch_forward_and_gradients(lib, name, bias):
    torch.manual_seed(0)
    ref = getattr(nn, name)(3, 5, bias=bias, dtype=torch.float64)
    ours = cell(lib, name, 3, 5, bias=bias, dtype=torch.float64)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, dtype=torch.float64)
    h = torch.randn(2, 5, dtype=torch.float64)
    hx = (h, torch.randn(2, 5, dtype=torch.float64)) if name == "LSTMCell" else h
    got, want = ours(x, hx), ref(x, hx)
    got, want = (list(got), list(want)) if name == "LSTMCell" else ([got], [want])
    close(got, want)
    close(list(torch.autograd.grad(sum(g.sum() for g in got), list(ours.parameters()))),
          list(torch.autograd.grad(sum(w.sum() for w in want), list(ref.parameters()))))  # fmt: skip


@pytest.mark.parametrize("lib", CELL_LIBS)
@pytest.mark.parametrize("name", CELLS)
def test_cell_unbatched_equals_batch_of_one(lib, name):
    c = cell(lib, name, 3, 5)
    x = torch.randn(3)
    un, one = c(x), c(x.unsqueeze(0))
    un, one = (list(un), list(one)) if name == "LSTMCell" else ([un], [one])
    for a, b in zip(un, one):
        torch.testing.assert_close(a, b.squeeze(0))


@pytest.mark.parametrize("lib", CELL_LIBS)
@pytest.mark.parametrize("name", CELLS)
def test_cell_state_dict_round_trips_with_torch(lib, name):
    ours = cell(lib, name, 3, 5)
    ref = getattr(nn, name)(3, 5)
    ref.load_state_dict(ours.state_dict())
    assert list(ours.state_dict()) == list(ref.state_dict())
    ours.load_state_dict(ref.state_dict())


@pytest.mark.parametrize("lib", CELL_LIBS)
@pytest.mark.parametrize("name", CELLS)
def test_cell_input_of_wrong_feature_size_raises_runtime_error(lib, name):
    with pytest.raises(RuntimeError):
        cell(lib, name, 3, 5)(torch.randn(2, 4))


@pytest.mark.parametrize("lib", CELL_LIBS)
@pytest.mark.parametrize("name", CELLS)
def test_cell_hx_of_wrong_batch_raises_runtime_error(lib, name):
    h = torch.randn(3, 5)
    with pytest.raises(RuntimeError):
        cell(lib, name, 3, 5)(torch.randn(2, 3), (h, h) if name == "LSTMCell" else h)


@pytest.mark.parametrize("lib", CELL_LIBS)
@pytest.mark.parametrize("name", CELLS)
def test_cell_input_of_three_dimensions_raises_value_error(lib, name):
    with pytest.raises(ValueError, match="1D or 2D"):
        cell(lib, name, 3, 5)(torch.randn(1, 2, 3))


@pytest.mark.parametrize("lib", CELL_LIBS)
@pytest.mark.parametrize("name", CELLS)
def test_cell_with_zero_hidden_size(lib, name):
    c = cell(lib, name, 3, 0)
    out = c(torch.randn(2, 3))
    for s in out if name == "LSTMCell" else (out,):
        assert s.shape == (2, 0)


@pytest.mark.parametrize("lib", CELL_LIBS)
@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize("options", [{}, {"bias": False}])
def test_cell_repr_is_torch_s(lib, name, options):
    assert repr(cell(lib, name, 3, 5, **options)) == repr(getattr(nn, name)(3, 5, **options))


@pytest.mark.parametrize("lib", CELL_LIBS)
def test_rnn_cell_relu_repr_and_numbers(lib):
    c = cell(lib, "RNNCell", 3, 5, nonlinearity="relu")
    assert repr(c) == "RNNCell(3, 5, nonlinearity=relu)"
    x = torch.randn(2, 3)
    torch.testing.assert_close(c(x), torch.relu(x @ c.weight_ih.T + c.bias_ih + c.bias_hh))


@pytest.mark.parametrize("lib", CELL_LIBS)
@pytest.mark.parametrize("name", CELLS)
def test_cell_omitted_hx_equals_zeros(lib, name):
    c = cell(lib, name, 3, 5)
    x = torch.randn(2, 3)
    z = torch.zeros(2, 5)
    a, b = c(x), c(x, (z, z) if name == "LSTMCell" else z)
    a, b = (list(a), list(b)) if name == "LSTMCell" else ([a], [b])
    close([t.double() for t in a], [t.double() for t in b])


# ---------------------------------------------------------------------------------------------- LSTM projections
PROJ_LIBS = ["torch", "eager", "script", "cudnn"]


@pytest.mark.parametrize("lib", PROJ_LIBS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_lstm_proj_size_shapes(lib, bidirectional):
    m = layer(lib, "LSTM", 3, 6, num_layers=2, bidirectional=bidirectional, proj_size=2)
    d = 2 if bidirectional else 1
    out, (h, c) = m(torch.randn(5, 4, 3))
    assert out.shape == (5, 4, d * 2) and h.shape == (2 * d, 4, 2) and c.shape == (2 * d, 4, 6)
    out, (h, c) = m(torch.randn(5, 3))
    assert out.shape == (5, d * 2) and h.shape == (2 * d, 2) and c.shape == (2 * d, 6)


@pytest.mark.parametrize("lib", PROJ_LIBS)
@pytest.mark.parametrize("bias", [True, False])
def test_lstm_proj_size_parameters_are_torch_s(lib, bias):
    ref = nn.LSTM(3, 6, num_layers=2, bias=bias, bidirectional=True, proj_size=2)
    m = layer(lib, "LSTM", 3, 6, num_layers=2, bias=bias, bidirectional=True, proj_size=2)
    assert [(n, p.shape) for n, p in m.named_parameters()] == [(n, p.shape) for n, p in ref.named_parameters()]
    assert [[w.shape for w in ws] for ws in m.all_weights] == [[w.shape for w in ws] for ws in ref.all_weights]


@pytest.mark.parametrize("lib", PROJ_LIBS)
@pytest.mark.parametrize("options", [{}, {"num_layers": 2, "bidirectional": True}, {"bias": False}])
def test_lstm_proj_size_forward_and_gradients_equal_torch(lib, options):
    ref, ours = twin(lib, "LSTM", 3, 5, proj_size=3, **options)
    n = options.get("num_layers", 1) * (2 if options.get("bidirectional") else 1)
    x = torch.randn(6, 2, 3, dtype=torch.float64, requires_grad=True)
    hx = (torch.randn(n, 2, 3, dtype=torch.float64), torch.randn(n, 2, 5, dtype=torch.float64))
    got, want = states(ours(x, hx)), states(ref(x, hx))
    close(got, want)
    close(list(torch.autograd.grad(sum(s.sum() for s in got), [x, *ours.parameters()])),
          list(torch.autograd.grad(sum(s.sum() for s in want), [x, *ref.parameters()])))  # fmt: skip


@pytest.mark.parametrize("lib", PROJ_LIBS)
def test_lstm_proj_size_state_dict_round_trips_both_ways(lib):
    ours = layer(lib, "LSTM", 3, 5, num_layers=2, proj_size=2, dtype=torch.float64)
    ref = nn.LSTM(3, 5, num_layers=2, proj_size=2, dtype=torch.float64)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    close(states(ref(x)), states(ours(x)))
    ref.reset_parameters()
    ours.load_state_dict(ref.state_dict())
    close(states(ours(x)), states(ref(x)))


@pytest.mark.parametrize("lib", PROJ_LIBS)
def test_lstm_proj_size_packed_sequence_equals_torch(lib):
    ref, ours = twin(lib, "LSTM", 3, 5, bidirectional=True, proj_size=2)
    packed = _packed(torch.randn(5, 3, 3, dtype=torch.float64), [2, 5, 3], enforce_sorted=False)
    got, want = ours(packed), ref(packed)
    close([got[0].data, *states(got)[1:]], [want[0].data, *states(want)[1:]])


@pytest.mark.parametrize("lib", PROJ_LIBS)
@pytest.mark.parametrize("proj_size", [5, 7, -1])
def test_lstm_proj_size_must_be_below_hidden_size_and_non_negative(lib, proj_size):
    with pytest.raises(ValueError, match="proj_size"):
        layer(lib, "LSTM", 3, 5, proj_size=proj_size)


@pytest.mark.parametrize("lib", PROJ_LIBS)
def test_lstm_proj_size_hidden_state_must_be_proj_size_wide(lib):
    m = layer(lib, "LSTM", 3, 5, proj_size=2)
    with pytest.raises(RuntimeError):
        m(torch.randn(4, 2, 3), (torch.zeros(1, 2, 5), torch.zeros(1, 2, 5)))


@pytest.mark.parametrize("lib", PROJ_LIBS)
def test_lstm_proj_size_repr_is_torch_s(lib):
    text = repr(layer(lib, "LSTM", 3, 5, num_layers=2, proj_size=2)).replace(f", backend='{lib}'", "")
    assert text == repr(nn.LSTM(3, 5, num_layers=2, proj_size=2)) == "LSTM(3, 5, proj_size=2, num_layers=2)"


def test_auto_runs_proj_size_on_torch_s_kernel_named_native_on_cpu():
    """seqforge only: every backend that runs built-in cells runs projections, so ``auto`` keeps its rule
    (torch's kernel, called "native" on CPU), and falls back to ``script`` where the options need it."""
    auto = seqforge.LSTM(3, 5, proj_size=2, backend="auto", dtype=torch.float64)
    ref = nn.LSTM(3, 5, proj_size=2, dtype=torch.float64)
    auto.load_state_dict(ref.state_dict())
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    close(states(auto(x)), states(ref(x)))
    assert auto.backend_used == "native" and "native supports these options" in auto.backend_reason
    normed = seqforge.LSTM(3, 5, proj_size=2, backend="auto", layer_norm=True)
    assert normed.backend_used == "script"


@pytest.mark.parametrize("lengths", [None, [6, 3, 1, 5]])
def test_script_proj_size_bidirectional_with_lengths_equals_torch_with_gradients(lengths):
    """seqforge only (torch takes lengths packed): the hand-written loops with projections, 2 layers, both
    directions, against torch.nn on the packed batch in float64, outputs, states and every gradient."""
    ref, ours = twin("script", "LSTM", 3, 5, num_layers=2, bidirectional=True, proj_size=2, batch_first=True)
    x = torch.randn(4, 6, 3, dtype=torch.float64, requires_grad=True)
    hx = (torch.randn(4, 4, 2, dtype=torch.float64), torch.randn(4, 4, 5, dtype=torch.float64))
    lens = None if lengths is None else torch.tensor(lengths)
    got = states(ours(x, hx, lengths=lens))
    if lens is None:
        want = states(ref(x, hx))
    else:
        packed = pack_padded_sequence(x, lens, batch_first=True, enforce_sorted=False)
        out, state = ref(packed, hx)
        want = [pad_packed_sequence(out, batch_first=True, total_length=6)[0], *state]
    close(got, want)
    weights = [torch.linspace(-1, 1, g.numel(), dtype=g.dtype).view_as(g) for g in got]
    loss_got = sum((g * w).sum() for g, w in zip(got, weights))
    loss_want = sum((g * w).sum() for g, w in zip(want, weights))
    close(list(torch.autograd.grad(loss_got, [x, *ours.parameters()])),
          list(torch.autograd.grad(loss_want, [x, *ref.parameters()])))  # fmt: skip


def test_script_proj_size_passes_gradgradcheck_with_lengths():
    """Double backward through the script backend with projections (its differentiable backward) and the
    scripted twin (TorchScript's autograd), float64."""
    torch.manual_seed(0)
    m = seqforge.LSTM(2, 3, bidirectional=True, proj_size=2, backend="script", dtype=torch.float64)
    x = torch.randn(3, 2, 2, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([3, 2])

    def run(x: Tensor, *params: Tensor) -> tuple[Tensor, ...]:
        out, (h, c) = m(x, lengths=lengths)
        return out, h, c

    assert torch.autograd.gradgradcheck(run, (x, *m.parameters()))
    scripted = torch.jit.script(m)
    assert torch.autograd.gradgradcheck(lambda x, *p: scripted(x, None, lengths)[0], (x, *m.parameters()))


def test_lstm_cell_proj_size_is_the_layer_s_step():
    layer_ = seqforge.LSTM(3, 5, proj_size=2, dtype=torch.float64)
    c = seqforge.LSTMCell(3, 5, proj_size=2, dtype=torch.float64)
    c.load_state_dict({k.replace("_l0", ""): v for k, v in layer_.state_dict().items()})
    assert c.output_size == 2 and repr(c) == "LSTMCell(3, 5, proj_size=2)"
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    out, _ = layer_(x)
    h, cc = c.init_state(2)
    assert h.shape == (2, 2) and cc.shape == (2, 5)
    for t in range(4):
        h, cc = c(x[t], (h, cc))
        torch.testing.assert_close(h, out[t], **TOL)


# ---------------------------------------------------------------------------------------------- type identity
def test_layers_are_not_torch_rnnbase_but_carry_what_torch_code_reads():
    """Decision (issue 12): not subclasses of ``nn.RNNBase``; code that dispatches on ``isinstance(m, nn.LSTM)``
    to initialize weights by name or call ``flatten_parameters`` works when given ``RecurrentBase`` too."""
    from seqforge.layers import RecurrentBase

    def init_like_torch_code(model: nn.Module) -> None:
        for m in model.modules():
            if isinstance(m, (nn.RNNBase, RecurrentBase)):
                m.flatten_parameters()
                for name, p in m.named_parameters():
                    if name.startswith("weight_hh"):
                        nn.init.orthogonal_(p)
                    elif name.startswith("bias"):
                        nn.init.zeros_(p)

    for lib in LIBS:
        m = layer(lib, "LSTM", 3, 4, num_layers=2)
        assert isinstance(m, nn.RNNBase) == (lib == "torch")
        init_like_torch_code(nn.Sequential(m))
        w = m.weight_hh_l1.detach()
        torch.testing.assert_close(w.T @ w, torch.eye(4), atol=1e-5, rtol=0)
        assert all(torch.count_nonzero(b) == 0 for n, b in m.named_parameters() if n.startswith("bias"))


# ---------------------------------------------------------------------------------------------- TorchScript
class LSTMUser(nn.Module):
    """What an importer writes around ``nn.LSTM``: tuple state in, ``out, (h, c)`` unpacked."""

    def __init__(self, rnn: nn.Module) -> None:
        super().__init__()
        self.rnn = rnn
        self.head = nn.Linear(rnn.hidden_size * 2, 2, dtype=torch.float64)

    def forward(self, x: Tensor, h0: Tensor, c0: Tensor) -> Tuple[Tensor, Tensor, Tensor]:  # noqa: UP006
        out, (h, c) = self.rnn(x, (h0, c0))
        return self.head(out), h, c


class SingleStateUser(nn.Module):
    def __init__(self, rnn: nn.Module) -> None:
        super().__init__()
        self.rnn = rnn

    def forward(self, x: Tensor, h0: Tensor) -> Tuple[Tensor, Tensor]:  # noqa: UP006
        out, h = self.rnn(x, h0)
        return out.relu(), h


def _user(lib: str, mode: str) -> tuple[nn.Module, tuple[Tensor, ...]]:
    rnn = layer(lib, mode, 3, 4, num_layers=2, bidirectional=True, dtype=torch.float64)
    x, h0 = torch.randn(5, 2, 3, dtype=torch.float64), torch.randn(4, 2, 4, dtype=torch.float64)
    if mode == "LSTM":
        return LSTMUser(rnn), (x, h0, torch.randn(4, 2, 4, dtype=torch.float64))
    return SingleStateUser(rnn), (x, h0)


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("mode", MODES)
def test_script_of_a_user_module_holding_a_layer_gives_the_same_numbers_and_gradients(lib, mode):
    user, args = _user(lib, mode)
    want = user(*args)
    want_grads = torch.autograd.grad(sum(w.sum() for w in want), list(user.parameters()))
    scripted = torch.jit.script(user)
    got = scripted(*args)
    close(list(got), list(want))
    close(list(torch.autograd.grad(sum(g.sum() for g in got), list(scripted.parameters()))), list(want_grads))
    assert list(scripted.state_dict()) == list(user.state_dict())


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("mode", MODES)
def test_jit_save_and_load_round_trip(lib, mode):
    user, args = _user(lib, mode)
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(user), buf)
    loaded = torch.jit.load(io.BytesIO(buf.getvalue()))
    close(list(loaded(*args)), list(user(*args)))
    x = torch.randn(9, 1, 3, dtype=torch.float64)  # another length and batch
    other = (x, *(a[:, :1] for a in args[1:]))
    close(list(loaded(*other)), list(user(*other)))


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("mode", MODES)
def test_user_module_keeps_working_eagerly_after_script(lib, mode):
    user, args = _user(lib, mode)
    torch.jit.script(user)
    packed = _packed(torch.randn(5, 3, 3, dtype=torch.float64), [5, 3, 2])
    out, _ = user.rnn(packed)  # torch.jit.script swaps in the scripted twin; eagerly it is still the layer
    assert isinstance(out, nn.utils.rnn.PackedSequence) and out.data.shape == (10, 8)
    close(list(user(*args)), list(user(*args)))


@pytest.mark.parametrize("lib", ["eager", "script"])  # seqforge only: torch.nn layers take no lengths
def test_scripted_layer_accepts_lengths_and_unbatched_input(lib):
    m = layer(lib, "GRU", 3, 4, bidirectional=True, dtype=torch.float64)
    scripted = torch.jit.script(m)
    x, lengths = torch.randn(5, 3, 3, dtype=torch.float64), torch.tensor([5, 2, 3])
    close(list(scripted(x, None, lengths)), list(m(x, lengths=lengths)))
    close(list(scripted(x[:, 0])), list(m(x[:, 0])))
    with pytest.raises(Exception, match="lengths must lie in"):
        scripted(x, None, torch.tensor([6, 2, 3]))


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("mode", MODES)
def test_trace_runs_at_other_lengths_or_warns(lib, mode):
    """torch's fused kernel is one op; seqforge's layers run, while traced, a backend whose loop over time the
    trace keeps (torch's kernel or the scripted loops), so the trace holds at other lengths and batch sizes."""
    m = layer(lib, mode, 3, 4, num_layers=2, bidirectional=True, dtype=torch.float64)
    traced = torch.jit.trace(m, torch.randn(6, 2, 3, dtype=torch.float64), check_trace=False)
    x = torch.randn(9, 3, 3, dtype=torch.float64)
    close(states(traced(x)), states(m(x)))
    assert traced(x)[0].shape == (9, 3, 8)


def test_trace_of_a_layer_it_cannot_keep_warns_where_users_see_it():
    """seqforge only (torch has no zoneout): a layer that must run the eager loop warns when traced, under
    the default warning filters (torch hides library TracerWarnings raised from torch's own frames)."""
    code = (
        "import torch, seqforge\n"
        "m = seqforge.GRU(3, 4, zoneout=0.1).eval()\n"
        "torch.jit.trace(m, torch.randn(6, 2, 3), check_trace=False)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert "TracerWarning: GRU: torch.jit.trace records the loop over time for exactly this input's number" in (
        result.stderr
    )
    assert "zoneout=0.1 runs in the eager step loop" in result.stderr


def test_script_refuses_zoneout_by_name_and_scripts_proj_size():
    """seqforge only (torch has no zoneout): zoneout has no TorchScript loop and is refused by name; a
    projected LSTM scripts and gives torch's numbers."""
    with pytest.raises(ValueError, match="zoneout=0.1 has no TorchScript loop"):
        torch.jit.script(seqforge.LSTM(3, 4, backend="eager", zoneout=0.1))
    ref, ours = twin("eager", "LSTM", 3, 5, num_layers=2, bidirectional=True, proj_size=2)
    scripted = torch.jit.script(ours)
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    close(states(scripted(x)), states(ref(x)))


class CellUser(nn.Module):
    """A hand-written loop over a cell, as importers write around ``nn.GRUCell``/``nn.RNNCell``."""

    def __init__(self, c: nn.Module) -> None:
        super().__init__()
        self.cell = c

    def forward(self, x: Tensor, h: Tensor) -> Tensor:
        for t in range(x.size(0)):
            h = self.cell(x[t], h)
        return h


class LSTMCellUser(nn.Module):
    def __init__(self, c: nn.Module) -> None:
        super().__init__()
        self.cell = c

    def forward(self, x: Tensor, h: Tensor, c: Tensor) -> Tuple[Tensor, Tensor]:  # noqa: UP006
        for t in range(x.size(0)):
            h, c = self.cell(x[t], (h, c))
        return h, c


@pytest.mark.parametrize("lib", CELL_LIBS)
@pytest.mark.parametrize("name", CELLS)
def test_script_of_a_user_loop_over_a_cell_gives_the_same_numbers_and_round_trips(lib, name):
    c = cell(lib, name, 3, 5, dtype=torch.float64)
    x, h = torch.randn(7, 2, 3, dtype=torch.float64), torch.randn(2, 5, dtype=torch.float64)
    user, args = (LSTMCellUser(c), (x, h, torch.randn(2, 5, dtype=torch.float64))) if name == "LSTMCell" else (
        CellUser(c), (x, h))  # fmt: skip
    want = user(*args)
    want = list(want) if isinstance(want, tuple) else [want]
    scripted = torch.jit.script(user)
    got = scripted(*args)
    got = list(got) if isinstance(got, tuple) else [got]
    close(got, want)
    close(list(torch.autograd.grad(sum(g.sum() for g in got), list(scripted.parameters()))),
          list(torch.autograd.grad(sum(w.sum() for w in want), list(c.parameters()))))  # fmt: skip
    buf = io.BytesIO()
    torch.jit.save(scripted, buf)
    loaded = torch.jit.load(io.BytesIO(buf.getvalue()))
    again = loaded(*args)
    close(list(again) if isinstance(again, tuple) else [again], want)


@pytest.mark.parametrize("lib", CELL_LIBS)
@pytest.mark.parametrize("name", CELLS)
def test_scripted_cell_unbatched_and_bad_input(lib, name):
    c = cell(lib, name, 3, 5)
    scripted = torch.jit.script(c)
    x = torch.randn(3)
    got, want = scripted(x), c(x)
    got, want = (list(got), list(want)) if name == "LSTMCell" else ([got], [want])
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)
    with pytest.raises((RuntimeError, torch.jit.Error), match="input|size|shape"):  # a raise in TorchScript
        scripted(torch.randn(2, 4))


@pytest.mark.parametrize("options", [{"proj_size": 2}, {}])
def test_scripted_lstm_cell_with_projection_and_layer_norm_cells(options):
    for c in (seqforge.LSTMCell(3, 5, dtype=torch.float64, **options),
              seqforge.LayerNormLSTMCell(3, 5, dtype=torch.float64, **options)):  # fmt: skip
        x = torch.randn(2, 3, dtype=torch.float64)
        close(list(torch.jit.script(c)(x)), list(c(x)))
    c = seqforge.LayerNormGRUCell(3, 5, dtype=torch.float64)
    close([torch.jit.script(c)(x)], [c(x)])
