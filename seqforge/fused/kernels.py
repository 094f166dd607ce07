"""TorchScript-compatible recurrence loops with hand-written backward loops (one direction of one layer).

The input projection ``gi = LN_ih(x W_ih^T) + b_ih`` is computed outside, once for all steps (one large
matmul, :func:`direction_inputs`). The cell math is :mod:`seqforge.cells.functional`'s; these loops only add
what their backward needs to keep. What remains per step is one recurrent matmul ``h W_hh^T`` and one
pointwise update, which the TorchScript fuser can turn into a single kernel on CUDA.

Forward loops return a fixed list (TorchScript needs one return type)::

    [h_all (T, B, H), c_all (T, B, H) or empty, saved (T, B, k*H) or empty, tanh_c (T, B, H) or empty,
     raw_hh (T, B, G*H) or empty, mean_hh (T, B, 1) or empty, rstd_hh (T, B, 1) or empty,
     mean_c (T, B, 1) or empty, rstd_c (T, B, 1) or empty]

where ``saved`` holds what the backward needs (LSTM: activated gates ``i, f, g, o``; GRU: ``r, z, n, gh_n``),
``raw_hh`` is ``h W_hh^T`` before layer norm and the ``mean``/``rstd`` entries are the layer-norm statistics
(of ``raw_hh`` and of the cell ``c_all``; only with layer norm and ``save=True``). Layer norm runs as torch's
native kernels (``native_layer_norm`` and its backward), one kernel each.

Backward loops receive the upstream gradients ``dh_all`` (and ``dc_all``) and return
``[dgi_all (T, B, G*H), dgh_raw_all (T, B, G*H), dgh_all (T, B, G*H), dcn_all (T, B, H) or empty, dh0, dc0]``:
``dgh_raw`` is the gradient of ``h W_hh^T`` (so ``dW_hh = dgh_raw^T h_prev`` is one matmul over all steps),
``dgh`` the gradient after layer norm (for the bias and layer-norm gains), ``dcn`` the gradient of the
normalized cell (for the cell layer-norm gains). Parameter gradients are reduced by the caller.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from seqforge.cells import functional as SF


def direction_inputs(x: Tensor, weights: list[Tensor | None], mode: str) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """``(gi (T, B, G*H), b_hh, ln_hh_bias)`` for one direction from ``x (T, B, I)`` and a cell's ten weights.

    ``gi = LN_ih(x W_ih^T) + b_ih`` for all steps in one matmul. Without recurrent layer norm (and except for
    the GRU, whose ``b_hh`` sits inside ``r * (.)``) ``b_hh`` is folded into ``gi``, so the loop's step is one
    ``addmm`` plus pointwise; with it, ``LN_hh(.) + b_hh`` becomes a layer norm with shift ``ln_hh_b + b_hh``.
    """
    w_ih, b_ih, b_hh = weights[0], weights[2], weights[3]
    ln_ih_w, ln_ih_b, ln_hh_w, ln_hh_b = weights[4], weights[5], weights[6], weights[7]
    assert w_ih is not None
    if mode != "GRU" and ln_hh_w is None and b_ih is not None and b_hh is not None:
        return SF.project(x, w_ih, b_ih + b_hh, ln_ih_w, ln_ih_b), None, ln_hh_b
    gi = SF.project(x, w_ih, b_ih, ln_ih_w, ln_ih_b)
    if ln_hh_w is not None and ln_hh_b is not None and b_hh is not None:
        return gi, None, ln_hh_b + b_hh
    return gi, b_hh, ln_hh_b


def cell_weights(cell: Any) -> list[Tensor | None]:
    """A built-in cell's ten weights in torch's order (``cell.weights()``) plus ``weight_hr`` (the LSTM
    projection, ``None`` without ``proj_size``): the eleven entries every direction runner reads."""
    return [*cell.weights(), getattr(cell, "weight_hr", None)]


def kernel_direction(
    mode: str, gi: Tensor, h0: Tensor, c0: Tensor | None, w_hh: Tensor, b_hh: Tensor | None,
    ln_hh_w: Tensor | None, ln_hh_b: Tensor | None, ln_c_w: Tensor | None, ln_c_b: Tensor | None,
    w_hr: Tensor | None, mask: Tensor | None,
) -> list[Tensor]:  # fmt: skip
    """One direction through the forward loop of ``mode``, differentiable by autograd or TorchScript:
    ``[h_all]`` or ``[h_all, c_all]``, ``h_all (T, B, P or H)``, ``c_all (T, B, H)``."""
    if mode == "LSTM":
        assert c0 is not None
        return lstm_direction(gi, h0, c0, w_hh, b_hh, ln_hh_w, ln_hh_b, ln_c_w, ln_c_b, w_hr, mask)
    if mode == "GRU":
        return [gru_forward(gi, h0, w_hh, b_hh, ln_hh_w, ln_hh_b, mask, False)[0]]
    return [rnn_forward(gi, h0, w_hh, b_hh, ln_hh_w, ln_hh_b, mode == "RNN_RELU", mask, False)[0]]


def final_states(states: list[Tensor], lengths: Tensor | None) -> list[Tensor]:
    """Each sequence's state at its last valid step, from per-step states ``(T, B, H)`` run over all ``T``."""
    if lengths is None:
        return [s[-1] for s in states]
    rows = torch.arange(lengths.size(0), device=lengths.device)
    return [s[lengths - 1, rows] for s in states]


def ln_backward(dy: Tensor, x: Tensor, mean: Tensor, rstd: Tensor, weight: Tensor) -> Tensor:
    """Gradient of layer norm w.r.t. its input ``x (B, N)`` from the saved ``mean`` and ``rstd``."""
    return torch.ops.aten.native_layer_norm_backward(dy, x, [x.size(-1)], mean, rstd, weight, None,
                                                      [True, False, False])[0]  # fmt: skip


def _empty(like: Tensor) -> Tensor:
    return torch.empty([0], dtype=like.dtype, device=like.device)


def _stack_or_empty(items: list[Tensor], like: Tensor) -> Tensor:
    return torch.stack(items) if len(items) > 0 else _empty(like)


def _stack_parts(parts: list[list[Tensor]], like: Tensor) -> Tensor:
    """``(T, B, k*H)`` from ``k`` per-step lists of ``(B, H)`` tensors: a few large copies after the loop
    instead of a ``cat`` per step."""
    if len(parts[0]) == 0:
        return _empty(like)
    return torch.cat([torch.stack(p) for p in parts], 2)


def _recurrent_projection(
    h: Tensor,
    w_hh_t: Tensor,
    b_hh: Tensor | None,
    ln_w: Tensor | None,
    ln_b: Tensor | None,
    save: bool,
    stats: list[list[Tensor]],
) -> Tensor:
    """``gh = LN_hh(h W_hh^T) + b_hh`` for one step, appending ``raw, mean, rstd`` to ``stats`` if asked."""
    gh = torch.mm(h, w_hh_t)
    if ln_w is not None and ln_b is not None:
        normed = SF.layer_norm(gh, ln_w, ln_b)
        if save:
            stats[0].append(gh)
            stats[1].append(normed[1])
            stats[2].append(normed[2])
        gh = normed[0]
    if b_hh is not None:
        gh = gh + b_hh
    return gh


def _pre_activation(
    gi_t: Tensor,
    h: Tensor,
    w_hh_t: Tensor,
    b_hh: Tensor | None,
    ln_w: Tensor | None,
    ln_b: Tensor | None,
    save: bool,
    stats: list[list[Tensor]],
) -> Tensor:
    """``gi_t + gh``; without layer norm a single ``addmm`` (callers may fold ``b_hh`` into ``gi``)."""
    if ln_w is None and b_hh is None:
        return torch.addmm(gi_t, h, w_hh_t)
    return gi_t + _recurrent_projection(h, w_hh_t, b_hh, ln_w, ln_b, save, stats)


def lstm_forward(
    gi: Tensor,
    h0: Tensor,
    c0: Tensor,
    w_hh: Tensor,
    b_hh: Tensor | None,
    ln_hh_w: Tensor | None,
    ln_hh_b: Tensor | None,
    ln_c_w: Tensor | None,
    ln_c_b: Tensor | None,
    w_hr: Tensor | None,
    mask: Tensor | None,
    save: bool,
) -> list[Tensor]:
    """LSTM recurrence. ``gi (T, B, 4H)``, ``h0 (B, P)``, ``c0 (B, H)``, ``w_hh (4H, P)``; returns the list
    above. With the projection ``w_hr (P, H)``: ``h' = (o * tanh(c')) W_hr^T``; ``P = H`` without it.

    Runs without autograd (inside :class:`seqforge.fused.function.FusedRecurrence` or for inference): every
    step writes into preallocated outputs (``out=`` and in-place kernels, :func:`SF.lstm_state_into`), so
    nothing is stacked afterwards. :func:`kernel_direction` is the differentiable form.
    """
    steps, batch, hidden = gi.size(0), gi.size(1), c0.size(1)
    w_hh_t = w_hh.t()
    w_hr_t = w_hr.t() if w_hr is not None else None
    kept = steps if save else 1  # the per-step rows the backward needs, else one scratch row
    h_all = gi.new_empty([steps, batch, h0.size(1)])
    c_all = gi.new_empty([steps, batch, hidden])
    gates = gi.new_empty([kept, batch, 4 * hidden])
    tanh_c = gi.new_empty([kept, batch, hidden])
    h_raw = gi.new_empty([batch, hidden]) if w_hr_t is not None else _empty(gi)  # o * tanh(c) before W_hr
    ln_hh = ln_hh_w is not None and ln_hh_b is not None
    stats = [gi.new_empty([steps, batch, n]) if save and ln_hh else _empty(gi) for n in (4 * hidden, 1, 1)]
    cell_stats = [gi.new_empty([steps, batch, 1]) if save and ln_c_w is not None else _empty(gi) for _ in range(2)]
    h, c = h0, c0
    for t in range(steps):
        k = t if save else 0
        pre = gates[k]
        hm = h if mask is None else h * mask
        if ln_hh_w is not None and ln_hh_b is not None:
            raw = torch.mm(hm, w_hh_t, out=stats[0][t]) if save else torch.mm(hm, w_hh_t)
            normed = SF.layer_norm(raw, ln_hh_w, ln_hh_b)
            if save:
                stats[1][t] = normed[1]
                stats[2][t] = normed[2]
            torch.add(gi[t], normed[0], out=pre)
        else:
            torch.addmm(gi[t], hm, w_hh_t, out=pre)
            if b_hh is not None:
                pre += b_hh
        moments = SF.lstm_state_into(pre, c, c_all[t], tanh_c[k], h_all[t] if w_hr_t is None else h_raw, ln_c_w,
                                     ln_c_b)  # fmt: skip
        if save and ln_c_w is not None:
            cell_stats[0][t] = moments[0]
            cell_stats[1][t] = moments[1]
        if w_hr_t is not None:
            torch.mm(h_raw, w_hr_t, out=h_all[t])
        h, c = h_all[t], c_all[t]
    empty = _empty(gi)
    return [h_all, c_all, gates if save else empty, tanh_c if save else empty, stats[0], stats[1], stats[2],
            cell_stats[0], cell_stats[1]]  # fmt: skip


def lstm_direction(
    gi: Tensor, h0: Tensor, c0: Tensor, w_hh: Tensor, b_hh: Tensor | None, ln_hh_w: Tensor | None,
    ln_hh_b: Tensor | None, ln_c_w: Tensor | None, ln_c_b: Tensor | None, w_hr: Tensor | None, mask: Tensor | None,
) -> list[Tensor]:  # fmt: skip
    """The LSTM recurrence of :func:`lstm_forward` through the cells' own step (:func:`SF.project`,
    :func:`SF.lstm_pointwise`), differentiable by autograd and TorchScript: ``[h_all, c_all]``."""
    h, c = h0, c0
    hs: list[Tensor] = []
    cs: list[Tensor] = []
    for t in range(gi.size(0)):
        gh = SF.project(h if mask is None else h * mask, w_hh, b_hh, ln_hh_w, ln_hh_b)
        h, c = SF.lstm_pointwise(gi[t], gh, c, ln_c_w, ln_c_b)
        if w_hr is not None:
            h = torch.mm(h, w_hr.t())
        hs.append(h)
        cs.append(c)
    return [torch.stack(hs), torch.stack(cs)]


def gru_forward(
    gi: Tensor,
    h0: Tensor,
    w_hh: Tensor,
    b_hh: Tensor | None,
    ln_hh_w: Tensor | None,
    ln_hh_b: Tensor | None,
    mask: Tensor | None,
    save: bool,
) -> list[Tensor]:
    """GRU recurrence. ``gi (T, B, 3H)``, ``h0 (B, H)``, ``w_hh (3H, H)``; returns the list above."""
    w_hh_t = w_hh.t()
    h = h0
    hs: list[Tensor] = []
    saved: list[list[Tensor]] = [[], [], [], []]
    stats: list[list[Tensor]] = [[], [], []]
    for t in range(gi.size(0)):
        gh = _recurrent_projection(h if mask is None else h * mask, w_hh_t, b_hh, ln_hh_w, ln_hh_b, save, stats)
        out = SF.gru_update(gi[t], gh, h)
        h = out[0]
        hs.append(h)
        if save:
            for k in range(4):  # r, z, n, gh_n
                saved[k].append(out[k + 1])
    empty = _empty(gi)
    return [
        torch.stack(hs),
        empty,
        _stack_parts(saved, gi),
        empty,
        _stack_or_empty(stats[0], gi),
        _stack_or_empty(stats[1], gi),
        _stack_or_empty(stats[2], gi),
        empty,
        empty,
    ]


def rnn_forward(
    gi: Tensor,
    h0: Tensor,
    w_hh: Tensor,
    b_hh: Tensor | None,
    ln_hh_w: Tensor | None,
    ln_hh_b: Tensor | None,
    relu: bool,
    mask: Tensor | None,
    save: bool,
) -> list[Tensor]:
    """Vanilla RNN recurrence ``h' = act(gi + gh)``. ``gi (T, B, H)``; returns the list above."""
    w_hh_t = w_hh.t()
    h = h0
    hs: list[Tensor] = []
    stats: list[list[Tensor]] = [[], [], []]
    for t in range(gi.size(0)):
        pre = _pre_activation(gi[t], h if mask is None else h * mask, w_hh_t, b_hh, ln_hh_w, ln_hh_b, save, stats)
        h = SF.rnn_activation(pre, relu)
        hs.append(h)
    empty = _empty(gi)
    return [
        torch.stack(hs),
        empty,
        empty,
        empty,
        _stack_or_empty(stats[0], gi),
        _stack_or_empty(stats[1], gi),
        _stack_or_empty(stats[2], gi),
        empty,
        empty,
    ]


def _through_w_hh(draw: Tensor, w_hh: Tensor, mask: Tensor | None) -> Tensor:
    """Gradient w.r.t. ``h`` of ``(h * mask) W_hh^T`` (recurrent dropout mask, if any)."""
    dh = torch.mm(draw, w_hh)
    return dh if mask is None else dh * mask


def _through_ln_hh(dgh: Tensor, ln_hh: list[Tensor], ln_hh_w: Tensor | None, t: int) -> Tensor:
    """Gradient of ``h W_hh^T`` from the gradient of ``gh`` at step ``t``; ``ln_hh = [raw, mean, rstd]``."""
    if ln_hh_w is None:
        return dgh
    return ln_backward(dgh, ln_hh[0][t], ln_hh[1][t], ln_hh[2][t], ln_hh_w)


def lstm_backward(
    dh_all: Tensor,
    dc_all: Tensor | None,
    c0: Tensor,
    c_all: Tensor,
    gates: Tensor,
    tanh_c: Tensor,
    w_hh: Tensor,
    mask: Tensor | None,
    ln_hh_w: Tensor | None,
    raw_hh: Tensor,
    mean_hh: Tensor,
    rstd_hh: Tensor,
    ln_c_w: Tensor | None,
    mean_c: Tensor,
    rstd_c: Tensor,
    w_hr: Tensor | None,
) -> list[Tensor]:
    """Backward of :func:`lstm_forward` through time. Returns the list above plus ``dh_all`` after the
    recurrent contributions, ``(T, B, P)`` (for ``dW_hr``; empty without the projection ``w_hr``).

    Per step: the recurrent ``mm``, the layer-norm backwards and a few pointwise kernels that write the gate
    gradients straight into their rows of the output (``out=`` and in-place), with no per-step ``cat``,
    copy or temporary of the size of all steps (fresh large buffers cost page faults on CPU).
    """
    ln_hh = [raw_hh, mean_hh, rstd_hh]
    steps, batch, width = dh_all.shape  # width: P with the projection, else H
    dgates = torch.empty_like(gates)
    dgh_raw = torch.empty_like(gates) if ln_hh_w is not None else dgates  # same tensor without layer norm
    dcn_all = torch.empty_like(c_all) if ln_c_w is not None else _empty(dh_all)
    dhp_all = torch.empty_like(dh_all) if w_hr is not None else _empty(dh_all)
    dh_next = torch.zeros([batch, width], dtype=dh_all.dtype, device=dh_all.device)
    dc_next = torch.zeros_like(c0)
    for t in range(steps - 1, -1, -1):
        dh = dh_all[t] + dh_next
        if w_hr is not None:
            dhp_all[t] = dh
            dh = torch.mm(dh, w_hr)  # through h = (o * tanh(c)) W_hr^T
        i, f, g, o = gates[t].chunk(4, 1)
        di, df, dg, do = dgates[t].chunk(4, 1)
        tc = tanh_c[t]
        dcn = torch.mul(dh, o, out=dcn_all[t]) if ln_c_w is not None else dh * o
        dcn.addcmul_(dcn, tc * tc, value=-1.0)  # dh * o * (1 - tanh^2)
        if ln_c_w is not None:
            dcn = ln_backward(dcn, c_all[t], mean_c[t], rstd_c[t], ln_c_w)
        dc = dcn + dc_next
        if dc_all is not None:  # None: c_all itself was not used
            dc += dc_all[t]
        c_prev = c0 if t == 0 else c_all[t - 1]
        dc_next = dc * f
        torch.mul(dc, g, out=di).mul_(i - i * i)  # i = sigmoid(.)
        torch.mul(dc, c_prev, out=df).mul_(f - f * f)
        torch.mul(dc, i, out=dg).addcmul_(dg, g * g, value=-1.0)  # g = tanh(.)
        torch.mul(dh, tc, out=do).mul_(o - o * o)
        draw = _through_ln_hh(dgates[t], ln_hh, ln_hh_w, t)
        if ln_hh_w is not None:
            dgh_raw[t] = draw
        dh_next = _through_w_hh(draw, w_hh, mask)
    return [dgates, dgh_raw, dgates, dcn_all, dh_next, dc_next, dhp_all]


def gru_backward(
    dh_all: Tensor,
    h0: Tensor,
    h_all: Tensor,
    saved: Tensor,
    w_hh: Tensor,
    mask: Tensor | None,
    ln_hh_w: Tensor | None,
    raw_hh: Tensor,
    mean_hh: Tensor,
    rstd_hh: Tensor,
) -> list[Tensor]:
    """Backward of :func:`gru_forward` through time."""
    ln_hh = [raw_hh, mean_hh, rstd_hh]
    steps, batch, hidden = dh_all.shape
    dgi = torch.empty([steps, batch, 3 * hidden], dtype=dh_all.dtype, device=dh_all.device)
    dgh = torch.empty_like(dgi)
    dgh_raw = torch.empty_like(dgi) if ln_hh_w is not None else dgh
    dh_next = torch.zeros([batch, hidden], dtype=dh_all.dtype, device=dh_all.device)
    for t in range(steps - 1, -1, -1):
        dh = dh_all[t] + dh_next
        r, z, n, h_n = saved[t].chunk(4, 1)
        h_prev = h0 if t == 0 else h_all[t - 1]
        dn = dh * (1.0 - z) * (1.0 - n * n)
        dr = dn * h_n * r * (1.0 - r)
        dz = dh * (h_prev - n) * z * (1.0 - z)
        dgi[t] = torch.cat([dr, dz, dn], 1)
        dgh_t = torch.cat([dr, dz, dn * r], 1)
        dgh[t] = dgh_t
        draw = _through_ln_hh(dgh_t, ln_hh, ln_hh_w, t)
        if ln_hh_w is not None:
            dgh_raw[t] = draw
        dh_next = dh * z + _through_w_hh(draw, w_hh, mask)
    return [dgi, dgh_raw, dgh, _empty(dh_all), dh_next, _empty(dh_all)]


def rnn_backward(
    dh_all: Tensor,
    h_all: Tensor,
    w_hh: Tensor,
    mask: Tensor | None,
    ln_hh_w: Tensor | None,
    raw_hh: Tensor,
    mean_hh: Tensor,
    rstd_hh: Tensor,
    relu: bool,
) -> list[Tensor]:
    """Backward of :func:`rnn_forward` through time."""
    ln_hh = [raw_hh, mean_hh, rstd_hh]
    steps, batch, hidden = dh_all.shape
    dpre_all = torch.empty_like(dh_all)
    dgh_raw = torch.empty_like(dh_all) if ln_hh_w is not None else dpre_all
    dh_next = torch.zeros([batch, hidden], dtype=dh_all.dtype, device=dh_all.device)
    for t in range(steps - 1, -1, -1):
        dh = dh_all[t] + dh_next
        h = h_all[t]
        dpre = dh * (h > 0).to(dh.dtype) if relu else dh * (1.0 - h * h)
        dpre_all[t] = dpre
        draw = _through_ln_hh(dpre, ln_hh, ln_hh_w, t)
        if ln_hh_w is not None:
            dgh_raw[t] = draw
        dh_next = _through_w_hh(draw, w_hh, mask)
    return [dpre_all, dgh_raw, dpre_all, _empty(dh_all), dh_next, _empty(dh_all)]
