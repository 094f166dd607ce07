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
import torch.nn.functional as F
from torch import Tensor

from seqforge.cells import functional as SF


def direction_inputs(x: Tensor, weights: list[Tensor | None], mode: str) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """``(gi (T, B, G*H), b_hh, ln_hh_shift)`` for one direction from ``x (T, B, I)`` and a cell's ten weights:
    :func:`input_projection` and :func:`recurrent_bias`."""
    b_hh, ln_hh_shift = recurrent_bias(weights, mode)
    return input_projection(x, weights, mode), b_hh, ln_hh_shift


def _folds_b_hh(weights: list[Tensor | None], mode: str) -> bool:
    """Whether ``b_hh`` joins ``gi``: both biases present, no recurrent layer norm, not the GRU (whose ``b_hh``
    sits inside ``r * (.)``); the loop's step is then one ``addmm`` plus pointwise."""
    return mode != "GRU" and weights[6] is None and weights[2] is not None and weights[3] is not None


def input_bias(weights: list[Tensor | None], mode: str) -> Tensor | None:
    """The bias added to the input projection: ``b_ih``, or ``b_ih + b_hh`` when ``b_hh`` is folded into it."""
    b_ih, b_hh = weights[2], weights[3]
    if b_ih is not None and b_hh is not None and _folds_b_hh(weights, mode):
        return b_ih + b_hh
    return b_ih


def input_projection(x: Tensor, weights: list[Tensor | None], mode: str) -> Tensor:
    """``gi = LN_ih(x W_ih^T) + bias`` for all steps in one matmul (:func:`input_bias`); with layer norm the bias
    joins its shift (one layer norm with shift ``ln_ih_b + bias``, no separate add)."""
    w_ih, ln_ih_w = weights[0], weights[4]
    assert w_ih is not None
    bias = input_bias(weights, mode)
    if ln_ih_w is not None:
        return SF.layer_norm(F.linear(x, w_ih), ln_ih_w, add_optional(weights[5], bias))[0]
    return F.linear(x, w_ih, bias)


def recurrent_bias(weights: list[Tensor | None], mode: str) -> tuple[Tensor | None, Tensor | None]:
    """``(b_hh, ln_hh_shift)`` the loops receive: ``b_hh`` is ``None`` where it joined ``gi`` or, with recurrent
    layer norm, the layer norm's shift (``LN_hh(.) + b_hh`` as one layer norm with shift ``ln_hh_b + b_hh``)."""
    b_hh, ln_hh_w, ln_hh_b = weights[3], weights[6], weights[7]
    if _folds_b_hh(weights, mode):
        return None, ln_hh_b
    if ln_hh_w is not None:
        return None, add_optional(ln_hh_b, b_hh)
    return b_hh, ln_hh_b


def add_optional(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    """``a + b``, either of which may be absent."""
    if a is None or b is None:
        return b if a is None else a
    return a + b


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


def lstm_forward_shapes(steps: int, batch: int, hidden: int, width: int, save: bool, ln_hh: bool
                        ) -> list[list[int]]:  # fmt: skip
    """Shapes of the large buffers of :func:`lstm_forward`, ``[h_all, c_all, gates, tanh_c, raw_hh]``
    (``[0]``: unused); ``width`` is ``P`` with the projection, else ``H``. Without ``save`` the gates and
    ``tanh_c`` are one scratch row."""
    kept = steps if save else 1
    return [[steps, batch, width], [steps, batch, hidden], [kept, batch, 4 * hidden], [kept, batch, hidden],
            [steps, batch, 4 * hidden] if save and ln_hh else [0]]  # fmt: skip


def _scaled(x: Tensor | None, scale: Tensor) -> Tensor | None:
    return None if x is None else x * scale


def _gate_rows(gates: Tensor) -> list[list[Tensor]]:
    """Per-step views ``[i_t], [f_t], [g_t], [o_t]`` (each ``(B, H)``) of ``gates (T, B, 4H)``."""
    return [list(part.unbind(0)) for part in gates.chunk(4, 2)]


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
    work: list[Tensor] | None = None,
) -> list[Tensor]:
    """LSTM recurrence. ``gi (T, B, 4H)``, ``h0 (B, P)``, ``c0 (B, H)``, ``w_hh (4H, P)``; returns the list
    above. With the projection ``w_hr (P, H)``: ``h' = (o * tanh(c')) W_hr^T``; ``P = H`` without it.

    Runs without autograd (inside :class:`seqforge.fused.function.FusedRecurrence` or for inference): every
    step writes into preallocated outputs (``out=`` and in-place kernels on per-step row views taken once),
    so nothing is stacked afterwards but the small layer-norm statistics. One sigmoid activates all four
    gates: the ``g`` block of the pre-activation is doubled (through the doubled ``LN_hh`` gain and shift
    and a doubled ``gi`` block) and ``tanh(x) = 2 sigmoid(2x) - 1`` (on this CPU build ``tanh`` costs about
    six sigmoids); ``tanh(LN_cell(c'))`` likewise, with the cell layer norm's gain and shift doubled.
    ``work``: the large buffers, shaped as :func:`lstm_forward_shapes` says (e.g. pooled), else allocated
    here. :func:`kernel_direction` is the differentiable form.
    """
    steps, batch, hidden = gi.size(0), gi.size(1), c0.size(1)
    ln_hh = ln_hh_w is not None and ln_hh_b is not None
    if work is None:
        work = [gi.new_empty(shape) for shape in lstm_forward_shapes(steps, batch, hidden, h0.size(1), save, ln_hh)]
    h_all, c_all, gates, tanh_c, raw_hh = work[0], work[1], work[2], work[3], work[4]
    h_rows, c_rows, gi_rows, tanh_rows = h_all.unbind(0), c_all.unbind(0), gi.unbind(0), tanh_c.unbind(0)
    pre_rows, gate_rows = gates.unbind(0), _gate_rows(gates)
    i_rows, f_rows, g_rows, o_rows = gate_rows[0], gate_rows[1], gate_rows[2], gate_rows[3]
    raw_rows = raw_hh.unbind(0) if save and ln_hh else h_rows  # h_rows: a placeholder, never read
    w_hh_t = w_hh.t()
    w_hr_t = w_hr.t() if w_hr is not None else None
    h_raw = gi.new_empty([batch, hidden]) if w_hr_t is not None else _empty(gi)  # o * tanh(c) before W_hr
    scale = torch.ones([4 * hidden], dtype=gi.dtype, device=gi.device)  # doubles the g block
    scale[2 * hidden : 3 * hidden] = 2.0
    two = scale[2 * hidden : 3 * hidden]
    minus_one = torch.full([], -1.0, dtype=gi.dtype, device=gi.device)  # tanh = -1 + 2 sigmoid(2x)
    ln_hh_w2, ln_hh_b2 = _scaled(ln_hh_w, scale), _scaled(ln_hh_b, scale)
    ln_c_w2, ln_c_b2 = _scaled(ln_c_w, two), _scaled(ln_c_b, two)
    stats: list[list[Tensor]] = [[], [], [], []]  # mean_hh, rstd_hh, mean_c, rstd_c per step
    h, c = h0, c0
    for t in range(steps):
        k = t if save else 0
        pre, g = pre_rows[k], g_rows[k]
        hm = h if mask is None else h * mask
        if ln_hh_w2 is not None and ln_hh_b2 is not None:
            raw = torch.mm(hm, w_hh_t, out=raw_rows[t]) if save else torch.mm(hm, w_hh_t)
            normed = SF.layer_norm(raw, ln_hh_w2, ln_hh_b2)
            if save:
                stats[0].append(normed[1])
                stats[1].append(normed[2])
            torch.addcmul(normed[0], gi_rows[t], scale, out=pre)
        else:
            torch.addmm(gi_rows[t], hm, w_hh_t, out=pre)
            if b_hh is not None:
                pre += b_hh
            g.mul_(two)
        pre.sigmoid_()
        torch.add(minus_one, g, alpha=2.0, out=g)
        c_new, tc = c_rows[t], tanh_rows[k]
        torch.mul(f_rows[k], c, out=c_new).addcmul_(i_rows[k], g)
        if ln_c_w2 is not None:
            normed = SF.layer_norm(c_new, ln_c_w2, ln_c_b2)
            torch.sigmoid(normed[0], out=tc)
            if save:
                stats[2].append(normed[1])
                stats[3].append(normed[2])
        else:
            torch.mul(c_new, two, out=tc).sigmoid_()
        torch.add(minus_one, tc, alpha=2.0, out=tc)
        if w_hr_t is not None:
            torch.mul(o_rows[k], tc, out=h_raw)
            torch.mm(h_raw, w_hr_t, out=h_rows[t])
        else:
            torch.mul(o_rows[k], tc, out=h_rows[t])
        h, c = h_rows[t], c_new
    empty = _empty(gi)
    return [h_all, c_all, gates if save else empty, tanh_c if save else empty, raw_hh if save else empty,
            _stack_or_empty(stats[0], gi), _stack_or_empty(stats[1], gi), _stack_or_empty(stats[2], gi),
            _stack_or_empty(stats[3], gi)]  # fmt: skip


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


def lstm_backward_shapes(steps: int, batch: int, hidden: int, width: int, ln_hh: bool, proj: bool
                         ) -> list[list[int]]:  # fmt: skip
    """Shapes of :func:`lstm_backward`'s buffers ``[dgates, dgh_raw, dcn_all, dhp_all]`` (``[0]``: unused)."""
    return [[steps, batch, 4 * hidden], [steps, batch, 4 * hidden] if ln_hh else [0], [steps, batch, hidden],
            [steps, batch, width] if proj else [0]]  # fmt: skip


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
    work: list[Tensor] | None = None,
) -> list[Tensor]:
    """Backward of :func:`lstm_forward` through time. Returns the list above plus ``dh_all`` after the
    recurrent contributions, ``(T, B, P)`` (for ``dW_hr``; empty without the projection ``w_hr``).
    ``work``: buffers shaped as :func:`lstm_backward_shapes` says (e.g. pooled), else allocated here.

    Before the loop, the factors of the gate gradients that do not depend on the upstream gradient are
    computed for all steps at once, into the gradient buffers themselves (``dgates`` holds
    ``[g i', c_prev f', i g', tanh_c o']`` and ``dcn_all`` holds ``o tanh_c'``, primes for derivatives).
    Per step what remains is the recurrent ``mm``, the two layer-norm backwards and a few in-place
    multiplications of those rows by ``dc`` or ``dh``; no per-step ``cat``, copy or temporary of the size of
    all steps.
    """
    steps, batch, width = dh_all.shape  # width: P with the projection, else H
    hidden = c_all.size(2)
    if work is None:
        shapes = lstm_backward_shapes(steps, batch, hidden, width, ln_hh_w is not None, w_hr is not None)
        work = [dh_all.new_empty(shape) for shape in shapes]
    dgates, dcn_all, dhp_all = work[0], work[2], work[3]
    dgh_raw = work[1] if ln_hh_w is not None else dgates  # same tensor without layer norm
    i_all, f_all, g_all, o_all = gates.chunk(4, 2)
    di_all, df_all, dg_all, do_all = dgates.chunk(4, 2)
    torch.addcmul(gates, gates, gates, value=-1.0, out=dgates)  # s (1 - s): the sigmoid gates' derivatives
    di_all.mul_(g_all)
    df_all[1:].mul_(c_all[:-1])
    df_all[0].mul_(c0)
    torch.mul(g_all, g_all, out=dg_all)
    torch.addcmul(i_all, i_all, dg_all, value=-1.0, out=dg_all)  # i (1 - g^2)
    do_all.mul_(tanh_c)
    torch.mul(tanh_c, tanh_c, out=dcn_all)
    torch.addcmul(o_all, o_all, dcn_all, value=-1.0, out=dcn_all)  # o (1 - tanh_c^2)
    dgate_rows, dcn_rows, do_rows, f_rows = dgates.unbind(0), dcn_all.unbind(0), do_all.unbind(0), f_all.unbind(0)
    difg_rows = dgates[:, :, : 3 * hidden].view(steps, batch, 3, hidden).unbind(0)  # di, df, dg of a step
    dh_rows, c_rows, dgh_raw_rows = dh_all.unbind(0), c_all.unbind(0), dgh_raw.unbind(0)
    raw_rows, mean_rows, rstd_rows = raw_hh.unbind(0), mean_hh.unbind(0), rstd_hh.unbind(0)
    mean_c_rows, rstd_c_rows = mean_c.unbind(0), rstd_c.unbind(0)
    dhp_rows = dhp_all.unbind(0)
    dh = dh_rows[steps - 1]
    dc = torch.zeros_like(c0)  # the gradient of c_t, carried to step t - 1 through f_t
    for t in range(steps - 1, -1, -1):
        if w_hr is not None:
            dhp_rows[t].copy_(dh)
            dh = torch.mm(dh, w_hr)  # through h = (o * tanh(c)) W_hr^T
        dcn = dcn_rows[t].mul_(dh)
        if ln_c_w is not None:
            dcn = ln_backward(dcn, c_rows[t], mean_c_rows[t], rstd_c_rows[t], ln_c_w)
        dc = dcn if t == steps - 1 else dcn.addcmul_(dc, f_rows[t + 1])  # dcn: a fresh tensor or its own row
        if dc_all is not None:  # None: c_all itself was not used
            dc += dc_all[t]
        difg_rows[t].mul_(dc.unsqueeze(1))
        do_rows[t].mul_(dh)
        draw = dgate_rows[t]
        if ln_hh_w is not None:
            draw = ln_backward(draw, raw_rows[t], mean_rows[t], rstd_rows[t], ln_hh_w)
            dgh_raw_rows[t].copy_(draw)
        if t > 0 and mask is None:
            dh = torch.addmm(dh_rows[t - 1], draw, w_hh)
        else:
            dh = _through_w_hh(draw, w_hh, mask)
            if t > 0:
                dh = dh + dh_rows[t - 1]
    return [dgates, dgh_raw, dgates, dcn_all if ln_c_w is not None else _empty(dh_all), dh, dc * f_rows[0],
            dhp_all]  # fmt: skip


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
