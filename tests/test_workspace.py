"""The fused loops' reusable CPU buffers (``seqforge.fused.workspace``): reuse only of memory nothing holds,
and the same gradients (bitwise) as fresh buffers whatever order calls and their backwards run in.

Tolerance: reused buffers change only where results are written, so pooled and fresh runs are compared
with ``torch.equal``; the eager reference with the float64 parity tolerance ``PARITY_TOL = 1e-8``.
"""

from __future__ import annotations

import pytest
import torch

import seqforge
from seqforge.fused import function
from seqforge.fused.parity import PARITY_TOL, max_abs_diff, parity_inputs, perturbed_layer
from seqforge.fused.workspace import Workspace


def test_a_buffer_is_reused_only_when_nothing_holds_it():
    ws = Workspace(max_bytes=2**20)
    like = torch.empty(0)
    a = ws.empty([4, 8], like)
    first, view = a.data_ptr(), a[1:]
    del a
    b = ws.empty([4, 8], like)  # the first buffer is still referenced through `view`
    assert b.data_ptr() != first
    del view
    c = ws.empty([2, 16], like)  # same size, other shape: the freed first buffer again
    assert c.data_ptr() == first and c.shape == (2, 16) and c.is_contiguous() and c._base is None
    assert ws.cached_bytes == 2 * 32 * 4
    assert ws.empty([3, 8], like).data_ptr() not in (b.data_ptr(), c.data_ptr())  # both in use: a third one


def test_workspace_stays_within_max_bytes_and_pools_only_cpu():
    ws = Workspace(max_bytes=100 * 4)
    like = torch.empty(0)
    held = ws.empty([60], like)
    extra = ws.empty([60], like)  # would exceed the limit: a plain allocation, not kept
    assert ws.cached_bytes == 60 * 4 and extra.numel() == 60
    del held
    ws.empty([90], like)  # the free buffer is too small and is dropped to make room
    assert ws.cached_bytes == 90 * 4
    meta = ws.empty([5], torch.empty(0, device="meta"))
    assert meta.device.type == "meta" and ws.cached_bytes == 90 * 4
    assert ws.empty([3], torch.empty(0, dtype=torch.float64)).dtype == torch.float64
    with pytest.raises(ValueError, match="max_bytes must be >= 0, got -1"):
        Workspace(max_bytes=-1)


def _grads(layer, x, lengths, hx):
    """``(loss, inputs)`` of a forward whose backward the caller runs later."""
    x = x.clone().requires_grad_()
    hx = tuple(h.clone().requires_grad_() for h in hx)
    out, (h_n, c_n) = layer(x, hx, lengths=lengths)
    weight = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    return (out * weight).sum() + 2 * h_n.sum() + 3 * c_n.sum(), [x, *hx, *layer.parameters()]


def _backward(loss, inputs, retain: bool = False) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, inputs, retain_graph=retain))


@pytest.mark.parametrize("proj_size", [0, 3])
def test_pooled_calls_whose_backwards_run_in_reverse_order_match_fresh_buffers(monkeypatch, proj_size: int):
    """Three calls of the layer-norm LSTM (2 bidirectional layers, lengths, float64) share one workspace:
    the second's backward runs first, the third's forward reuses what that backward freed while the first
    still holds its saved buffers; every gradient equals the same call run alone with fresh buffers."""
    layer = perturbed_layer(seqforge.LSTM, "script", layer_norm=True, proj_size=proj_size)
    eager = perturbed_layer(seqforge.LSTM, "eager", layer_norm=True, proj_size=proj_size)
    x, lengths, _ = parity_inputs(layer)
    inputs = []
    for seed in range(3):
        torch.manual_seed(seed)
        hx = (torch.randn(4, 4, proj_size or 5, dtype=x.dtype), torch.randn(4, 4, 5, dtype=x.dtype))
        inputs.append((torch.randn_like(x), lengths.roll(seed), hx))
    monkeypatch.setattr(function, "WORKSPACE", Workspace(max_bytes=0))  # fresh buffers
    fresh = [_backward(*_grads(layer, *args)) for args in inputs]
    pool = Workspace(max_bytes=2**30)
    monkeypatch.setattr(function, "WORKSPACE", pool)
    first = _grads(layer, *inputs[0])
    second = _grads(layer, *inputs[1])
    got = {1: _backward(*second)}
    third = _grads(layer, *inputs[2])
    got[2] = _backward(*third)
    got[0] = _backward(*first)
    for k in range(3):
        assert all(torch.equal(a, b) for a, b in zip(got[k], fresh[k])), f"call {k} differs from fresh buffers"
        ref = _backward(*_grads(eager, *inputs[k]))
        assert max_abs_diff(got[k], ref) < PARITY_TOL
    assert pool.cached_bytes > 0
    kept = pool.cached_bytes
    for args in inputs:  # one call at a time: the buffers kept so far suffice
        _backward(*_grads(layer, *args))
    assert pool.cached_bytes == kept


def test_retained_graph_backward_twice_and_inference_mode(monkeypatch):
    """A second backward through a retained graph reads saved buffers that the first left intact; buffers
    handed out under inference_mode serve later training calls."""
    monkeypatch.setattr(function, "WORKSPACE", Workspace(max_bytes=2**30))
    layer = perturbed_layer(seqforge.LSTM, "script", layer_norm=True)
    x, lengths, hx = parity_inputs(layer)
    with torch.inference_mode():
        out_inf, _ = layer(x, hx, lengths=lengths)
    loss, inputs = _grads(layer, x, lengths, hx)
    once = _backward(loss, inputs, retain=True)
    twice = _backward(loss, inputs)
    assert all(torch.equal(a, b) for a, b in zip(once, twice))
    with torch.no_grad():
        out, _ = layer(x, hx, lengths=lengths)
    assert torch.equal(out, out_inf)
