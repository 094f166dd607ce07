"""The fused recurrence as an ``autograd.Function`` whose forward and backward loops are TorchScript.

:func:`fused_recurrence` runs one direction of one layer given the precomputed input projection
``gi (T, B, G*H)``. The forward loop saves the activated gates (and layer-norm statistics); the backward loop
computes one fused pointwise gradient per step, and the weight gradient is a single large matmul over all
steps, ``dW_hh = sum_t dgh_t^T h_{t-1}`` as ``(G*H, T*B) x (T*B, H)``, instead of per-step accumulation.
On CUDA both loops can be replayed from captured CUDA graphs (:mod:`seqforge.fused.cuda_graphs`); on CPU the
LSTM loops take their large buffers from :data:`seqforge.fused.workspace.WORKSPACE`. With layer norm on the
input projection, :func:`projected_inputs` computes ``gi`` through :class:`LayerNormProjection` (oneDNN
matmuls on CPU float32).

Second derivatives: when a graph of the gradient is requested (``create_graph=True``, i.e. grad mode is on
inside ``backward``), the backward recomputes the direction through the differentiable Python loop
(:func:`seqforge.fused.kernels.kernel_direction`) and returns autograd's gradient with its graph, so double
backward (gradient penalties, ``gradgradcheck``) is exact; the hand-written loop serves first-order only.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

import torch
from torch import Tensor

from seqforge.cells import functional as SF
from seqforge.fused import kernels
from seqforge.fused.cuda_graphs import GraphCache
from seqforge.fused.workspace import WORKSPACE

GRAPHS = GraphCache()


@cache
def scripted(name: str) -> Callable[..., list[Tensor]]:
    """The TorchScript-compiled version of ``kernels.<name>`` (compiled once, on first use)."""
    return torch.jit.script(getattr(kernels, name))


def _call(name: str, args: tuple[Any, ...], graphs: bool) -> list[Tensor]:
    fn = scripted(name)
    return GRAPHS(name, fn, args) if graphs else fn(*args)


def _pooled(shapes: list[list[int]], like: Tensor) -> list[Tensor]:
    """Buffers of ``shapes`` from the workspace (CPU: reused across calls, :mod:`seqforge.fused.workspace`)."""
    return [WORKSPACE.empty(shape, like) for shape in shapes]


def _forward_loop(mode: str, args: tuple[Any, ...], save: bool, graphs: bool) -> list[Tensor]:
    """Dispatch ``(gi, h0, c0, w_hh, b_hh, ln_hh_w, ln_hh_b, ln_c_w, ln_c_b, w_hr, mask)`` to the loop of
    ``mode``."""
    gi, h0, c0, w_hh, b_hh, ln_hh_w, ln_hh_b, ln_c_w, ln_c_b, w_hr, mask = args
    if mode == "LSTM":
        if gi.device.type != "cpu":  # the loop allocates (CUDA's caching allocator; CUDA-graph capture)
            return _call("lstm_forward", (*args, save), graphs)
        ln_hh = ln_hh_w is not None and ln_hh_b is not None
        shapes = kernels.lstm_forward_shapes(gi.size(0), gi.size(1), c0.size(1), h0.size(1), save, ln_hh)
        return scripted("lstm_forward")(*args, save, _pooled(shapes, gi))
    if mode == "GRU":
        return _call("gru_forward", (gi, h0, w_hh, b_hh, ln_hh_w, ln_hh_b, mask, save), graphs)
    return _call("rnn_forward", (gi, h0, w_hh, b_hh, ln_hh_w, ln_hh_b, mode == "RNN_RELU", mask, save), graphs)


def _lstm_backward_loop(args: tuple[Any, ...], graphs: bool) -> list[Tensor]:
    """:func:`kernels.lstm_backward` on ``args``, with pooled buffers on CPU."""
    dh_all, c_all, ln_hh_w, w_hr = args[0], args[3], args[8], args[15]
    if dh_all.device.type != "cpu":
        return _call("lstm_backward", args, graphs)
    steps, batch, width = dh_all.shape
    shapes = kernels.lstm_backward_shapes(steps, batch, c_all.size(2), width, ln_hh_w is not None, w_hr is not None)
    return scripted("lstm_backward")(*args, _pooled(shapes, dh_all))


def _recurrent_weight_grad(dgh_raw: Tensor, h0: Tensor, h_all: Tensor, mask: Tensor | None) -> Tensor:
    """``dW_hh = sum_t dgh_raw_t^T h_{t-1}`` as one ``(G*H, (T-1)*B) x ((T-1)*B, H)`` matmul over the steps
    after the first plus the first step's term (no concatenated copy of ``h_{t-1}``); with a recurrent-dropout
    ``mask``, ``h_{t-1} * mask`` (what ``W_hh`` multiplied)."""
    h_prev, first = h_all[:-1], h0
    if mask is not None:
        h_prev, first = h_prev * mask, h0 * mask
    dw_hh = dgh_raw[0].t().mm(first)
    return dw_hh.addmm_(dgh_raw[1:].flatten(0, 1).t(), h_prev.flatten(0, 1))


def _sum_bt(x: Tensor) -> Tensor:
    return x.sum((0, 1))


def _ln_parameter_grads(dy: Tensor, x: Tensor, mean: Tensor, rstd: Tensor, weight: Tensor | None,
                        bias: Tensor | None) -> tuple[Tensor | None, Tensor | None]:  # fmt: skip
    """Gradients of a layer norm's gain and shift over all steps, ``sum_{t,b} dy * xhat`` and ``sum dy``, as
    one native kernel over the ``(T*B, N)`` rows (``None`` for a parameter that is absent)."""
    if weight is None:
        return None, None
    rows = x.flatten(0, 1)
    _, dweight, dbias = torch.ops.aten.native_layer_norm_backward(
        dy.flatten(0, 1), rows, [rows.size(-1)], mean.flatten(0, 1), rstd.flatten(0, 1), weight,
        weight if bias is None else bias, [False, True, bias is not None],  # the kernel reads bias's device only
    )
    return dweight, dbias


class FusedRecurrence(torch.autograd.Function):
    """``(gi, h0, c0, w_hh, b_hh, ln_hh_w, ln_hh_b, ln_c_w, ln_c_b, w_hr, mask) -> (h_all, c_all)`` (LSTM) or
    ``h_all``.

    ``w_hr`` is the LSTM projection (``None`` without ``proj_size``). ``mask`` (``(B, H)`` or None) is the
    recurrent-dropout mask applied to ``h`` before ``W_hh``; it gets no gradient.
    """

    @staticmethod
    def forward(
        ctx: Any,
        mode: str,
        graphs: bool,
        gi: Tensor,
        h0: Tensor,
        c0: Tensor | None,
        w_hh: Tensor,
        b_hh: Tensor | None,
        ln_hh_w: Tensor | None,
        ln_hh_b: Tensor | None,
        ln_c_w: Tensor | None,
        ln_c_b: Tensor | None,
        w_hr: Tensor | None,
        mask: Tensor | None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        args = (gi.contiguous(), h0, c0, w_hh, b_hh, ln_hh_w, ln_hh_b, ln_c_w, ln_c_b, w_hr, mask)
        out = _forward_loop(mode, args, True, graphs)
        ctx.mode, ctx.graphs = mode, graphs
        ctx.has_bias = b_hh is not None
        ctx.set_materialize_grads(False)  # an unused c_all (the usual case) costs no zeros and no adds
        ctx.save_for_backward(gi, h0, c0, w_hh, b_hh, ln_hh_w, ln_hh_b, ln_c_w, ln_c_b, w_hr, mask, *out)
        h_all, c_all = out[0], out[1]
        return (h_all, c_all) if mode == "LSTM" else h_all

    @staticmethod
    def backward(ctx: Any, dh_all: Tensor | None, dc_all: Tensor | None = None) -> tuple[Tensor | None, ...]:
        gi, h0, c0, w_hh, b_hh, ln_hh_w, ln_hh_b, ln_c_w, ln_c_b, w_hr, mask, *out = ctx.saved_tensors
        h_all, c_all, saved, tanh_c, raw_hh, mean_hh, rstd_hh, mean_c, rstd_c = out
        dh_all = torch.zeros_like(h_all) if dh_all is None else dh_all.contiguous()  # None: h_all unused
        if torch.is_grad_enabled():  # create_graph=True: a differentiable gradient is asked for
            return _differentiable_backward(ctx, dh_all, dc_all)
        mode, graphs = ctx.mode, ctx.graphs
        ln_hh = (ln_hh_w, raw_hh, mean_hh, rstd_hh)
        args: tuple[Any, ...]
        dw_hr = None
        if mode == "LSTM":
            dc = None if dc_all is None else dc_all.contiguous()  # None: c_all was not used
            args = (dh_all, dc, c0, c_all, saved, tanh_c, w_hh, mask, *ln_hh, ln_c_w, mean_c, rstd_c, w_hr)
            dgi, dgh_raw, dgh, dcn, dh0, dc0, dh_proj = _lstm_backward_loop(args, graphs)
            if w_hr is not None and ctx.needs_input_grad[11]:
                hidden = c_all.size(2)
                h_raw = saved[:, :, 3 * hidden :] * tanh_c  # o * tanh(c): what W_hr multiplied
                dw_hr = dh_proj.flatten(0, 1).t().mm(h_raw.flatten(0, 1))  # (P, T*B) x (T*B, H)
        elif mode == "GRU":
            args = (dh_all, h0, h_all, saved, w_hh, mask, *ln_hh)
            dgi, dgh_raw, dgh, dcn, dh0, dc0 = _call("gru_backward", args, graphs)
        else:
            args = (dh_all, h_all, w_hh, mask, *ln_hh, mode == "RNN_RELU")
            dgi, dgh_raw, dgh, dcn, dh0, dc0 = _call("rnn_backward", args, graphs)
        has_bias = ctx.has_bias
        dw_hh = None
        if ctx.needs_input_grad[5]:
            dw_hh = _recurrent_weight_grad(dgh_raw, h0, h_all, mask)
        db_hh = _sum_bt(dgh) if has_bias else None
        dln_hh_w, dln_hh_b = _ln_parameter_grads(dgh, raw_hh, mean_hh, rstd_hh, ln_hh_w, ln_hh_b)
        dln_c_w, dln_c_b = _ln_parameter_grads(dcn, c_all, mean_c, rstd_c, ln_c_w, ln_c_b)
        return (None, None, dgi, dh0, dc0 if mode == "LSTM" else None, dw_hh, db_hh, dln_hh_w, dln_hh_b,
                dln_c_w, dln_c_b, dw_hr, None)  # fmt: skip


def _differentiable_backward(ctx: Any, dh_all: Tensor, dc_all: Tensor | None) -> tuple[Tensor | None, ...]:
    """The backward as autograd's gradient of the recomputed loop, with a graph (for double backward)."""
    inputs = list(ctx.saved_tensors[:11])  # gi, h0, c0, w_hh, b_hh, ln_hh_w, ln_hh_b, ln_c_w, ln_c_b, w_hr, mask
    wanted = [k for k, t in enumerate(inputs) if t is not None and ctx.needs_input_grad[k + 2]]
    outputs = kernels.kernel_direction(ctx.mode, *inputs)
    grad_outputs = [dh_all]
    if ctx.mode == "LSTM":
        grad_outputs.append(dc_all if dc_all is not None else torch.zeros_like(outputs[1]))
    grads = torch.autograd.grad(outputs, [inputs[k] for k in wanted], grad_outputs, create_graph=True,
                                allow_unused=True)  # fmt: skip
    result: list[Tensor | None] = [None] * 11
    for k, g in zip(wanted, grads):
        result[k] = g
    return (None, None, *result)


def _onednn_float32(x: Tensor) -> bool:
    """Whether ``x``'s matmuls may run through oneDNN: CPU float32 with oneDNN available and enabled."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and torch.backends.mkldnn.is_available()
            and bool(torch.backends.mkldnn.enabled))  # fmt: skip


def _linear(x: Tensor, weight: Tensor) -> Tensor:
    """``x (N, K) W^T`` for ``weight (M, K)``: oneDNN's matmul on CPU float32 (about 15-25 % faster than
    torch's MKL ``mm`` at these shapes on the benchmark's AMD EPYC, ``benchmarks/SPEED.md``), else ``mm``."""
    if _onednn_float32(x):
        return torch.ops.mkldnn._linear_pointwise(x, weight.contiguous(), None, "none", [], "")
    return x.mm(weight.t())


class LayerNormProjection(torch.autograd.Function):
    """``gi = LN(x W^T)`` with gain ``ln_w`` and shift ``shift`` over all steps, ``x (T, B, I)``, ``weight
    (N, I)`` -> ``(T, B, N)``, with the two input-sized matmuls (``x W^T`` and ``d gi_raw W``) through
    :func:`_linear`; ``dW = d gi_raw^T x`` stays ``mm``. A graph of the gradient (``create_graph=True``) is
    autograd's, through the same math recomputed (:func:`seqforge.fused.kernels.input_projection`)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, ln_w: Tensor, shift: Tensor | None) -> Tensor:
        lin = _linear(x.reshape(-1, x.size(-1)), weight)  # (T*B, N)
        gi, mean, rstd = torch.native_layer_norm(lin, [lin.size(1)], ln_w, shift, SF.LAYER_NORM_EPS)
        ctx.save_for_backward(x, weight, ln_w, shift, lin, mean, rstd)
        return gi.view(*x.shape[:-1], lin.size(1))

    @staticmethod
    def backward(ctx: Any, dgi: Tensor) -> tuple[Tensor | None, ...]:
        x, weight, ln_w, shift, lin, mean, rstd = ctx.saved_tensors
        need = ctx.needs_input_grad
        if torch.is_grad_enabled():  # create_graph=True
            inputs = [x, weight, ln_w, shift]
            wanted = [k for k in range(4) if inputs[k] is not None and need[k]]
            gi = SF.layer_norm(torch.nn.functional.linear(x, weight), ln_w, shift)[0]
            grads = torch.autograd.grad(gi, [inputs[k] for k in wanted], dgi, create_graph=True, allow_unused=True)
            result: list[Tensor | None] = [None] * 4
            for k, g in zip(wanted, grads):
                result[k] = g
            return tuple(result)
        mask = [need[0] or need[1], need[2], need[3] and shift is not None]
        dlin, dln_w, dshift = torch.ops.aten.native_layer_norm_backward(
            dgi.reshape(lin.shape), lin, [lin.size(1)], mean, rstd, ln_w, shift, mask)  # fmt: skip
        dx = _linear(dlin, weight.t()).view_as(x) if need[0] else None
        dweight = dlin.t().mm(x.reshape(-1, x.size(-1))) if need[1] else None
        return dx, dweight, dln_w, dshift


def projected_inputs(x: Tensor, weights: list[Tensor | None], mode: str
                     ) -> tuple[Tensor, Tensor | None, Tensor | None]:  # fmt: skip
    """:func:`kernels.direction_inputs` for the ``script`` backend: with layer norm on the input projection,
    ``gi`` from :class:`LayerNormProjection` (oneDNN matmuls on CPU float32); under autocast or
    ``torch.compile`` tracing the scriptable form itself."""
    w_ih, ln_ih_w = weights[0], weights[4]
    if (w_ih is None or ln_ih_w is None or torch.is_autocast_enabled(x.device.type)
            or torch.compiler.is_compiling()):  # fmt: skip
        return kernels.direction_inputs(x, weights, mode)
    shift = kernels.add_optional(weights[5], kernels.input_bias(weights, mode))
    gi = LayerNormProjection.apply(x, w_ih, ln_ih_w, shift)
    return (gi, *kernels.recurrent_bias(weights, mode))


def native_lstm_eligible(
    x: Tensor, weights: list[Tensor | None], mode: str, mask: Tensor | None, lengths: Tensor | None
) -> bool:
    """Whether one direction can run as torch's own single-layer LSTM kernel (the CPU fast path).

    On CPU torch runs a plain float32 LSTM as one oneDNN kernel for the whole sequence (projection, recurrent
    GEMMs and gates fused, weights packed once), which per-step ATen calls cannot approach on this build
    (``benchmarks/SPEED.md``). Eligible: CPU, LSTM, no layer norm, no recurrent-dropout mask, no ``lengths``
    (the loops' per-step cell states are needed then), autocast off (the loops' dtype rule is kept); with or
    without the projection ``weights[10]``.
    """
    return (x.device.type == "cpu" and mode == "LSTM" and mask is None and lengths is None
            and all(w is None for w in weights[4:10]) and not torch.is_autocast_enabled("cpu"))  # fmt: skip


def native_lstm_direction(x: Tensor, weights: list[Tensor | None], h0: Tensor, c0: Tensor
                          ) -> tuple[Tensor, list[Tensor]]:  # fmt: skip
    """``(h_all (T, B, P or H), [h_T, c_T])`` of one LSTM direction from ``x (T, B, I)`` through
    ``torch._VF.lstm`` (torch's forward and backward, double backward included; same math and gate order as
    the loops; torch sees the projection ``weights[10]`` from ``h0`` being narrower than ``c0``)."""
    flat = [w for w in (*weights[:4], weights[10]) if w is not None]
    out, h_n, c_n = torch._VF.lstm(x, (h0.unsqueeze(0), c0.unsqueeze(0)), flat, weights[2] is not None, 1, 0.0,
                                   False, False, False)  # fmt: skip
    return out, [h_n[0], c_n[0]]


def fused_recurrence(
    mode: str,
    gi: Tensor,
    h0: Tensor,
    c0: Tensor | None,
    w_hh: Tensor,
    b_hh: Tensor | None,
    ln_hh: tuple[Tensor | None, Tensor | None],
    ln_cell: tuple[Tensor | None, Tensor | None],
    mask: Tensor | None = None,
    graphs: bool = True,
    w_hr: Tensor | None = None,
) -> list[Tensor]:
    """Run one direction of one layer; returns ``[h_all]`` or ``[h_all, c_all]``, ``h_all (T, B, P or H)``,
    ``c_all (T, B, H)``.

    Args:
        mode: ``"LSTM"``, ``"GRU"``, ``"RNN_TANH"`` or ``"RNN_RELU"``.
        gi: the input projection ``LN_ih(x W_ih^T) + b_ih`` for all steps, ``(T, B, G*H)``.
        h0, c0: initial state ``(B, P or H)`` and ``(B, H)`` (``c0`` only for the LSTM).
        w_hh, b_hh: recurrent weight ``(G*H, P or H)`` and bias ``(G*H,)`` (or ``None``).
        ln_hh, ln_cell: layer-norm gain and shift of the recurrent projection and of the LSTM cell
            (``(None, None)`` without layer norm).
        mask: recurrent-dropout mask ``(B, H)`` multiplying ``h`` before ``W_hh`` (None: no dropout).
        graphs: allow CUDA-graph capture of the loops (only used on CUDA).
        w_hr: the LSTM projection ``(P, H)`` (``proj_size = P``), or ``None``.

    Under autocast the loops run in ``w_hh``'s dtype (``gi`` is cast to it), autocast disabled.
    """
    device = gi.device.type
    if torch.is_autocast_enabled(device):
        # The recurrence runs in the parameters' dtype: the carried state would lose too much in bf16/fp16,
        # and the loops need one dtype. The input projection outside stays in the autocast dtype.
        with torch.autocast(device, enabled=False):
            return fused_recurrence(mode, gi.to(w_hh.dtype), h0, c0, w_hh, b_hh, ln_hh, ln_cell, mask, graphs, w_hr)
    tensors = (gi, h0, c0, w_hh, b_hh, *ln_hh, *ln_cell, w_hr, mask)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        out = FusedRecurrence.apply(mode, graphs, *tensors)
        return list(out) if isinstance(out, tuple) else [out]
    # Inference: the same forward loop without saving anything for a backward.
    out = _forward_loop(mode, (gi.contiguous(), h0, c0, w_hh, b_hh, *ln_hh, *ln_cell, w_hr, mask), False, graphs)
    return out[:2] if mode == "LSTM" else out[:1]
