"""Multi-layer, bidirectional, variable-length orchestration shared by the fused backends.

Written in the TorchScript-compatible subset so that the same code runs eagerly (each direction through the
custom ``autograd.Function`` of :mod:`seqforge.fused.function`, or the compiled step loop) and compiled into
an exportable ScriptModule (:mod:`seqforge.fused.export`, where TorchScript differentiates the loops).

Variable lengths: every direction runs the full ``T`` steps on a sequence whose valid steps come first (the
reverse direction reverses each sequence *within its length*), then outputs at padded steps are zeroed and
the final state of each sequence is read at step ``length - 1``. Padded steps therefore never reach a valid
output or final state, in value or in gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from seqforge.cells.functional import LAYER_NORM_EPS
from seqforge.fused import kernels

# Index of each parameter in a per-(layer, direction) weight list; the order of ``LayerWeights``.
W_IH, W_HH, B_IH, B_HH, LN_IH_W, LN_IH_B, LN_HH_W, LN_HH_B, LN_C_W, LN_C_B = range(10)


def input_projection(
    x: Tensor,
    w_ih: Tensor,
    b_ih: Tensor | None,
    ln_w: Tensor | None,
    ln_b: Tensor | None,
    eps: float = LAYER_NORM_EPS,
) -> Tensor:
    """``LN_ih(x W_ih^T) + b_ih`` for all steps at once: ``x (T, B, I)`` -> ``(T, B, G*H)``, one matmul.

    The scriptable twin of :func:`seqforge.cells.functional.project` (TorchScript cannot read its module
    constant), computing the same expression.
    """
    if ln_w is None or ln_b is None:
        return F.linear(x, w_ih, b_ih)
    gi = F.layer_norm(F.linear(x, w_ih), [w_ih.size(0)], ln_w, ln_b, eps)
    return gi if b_ih is None else gi + b_ih


def reverse_time(x: Tensor, index: Tensor | None) -> Tensor:
    """Reverse ``x (T, B, F)`` in time, within each sequence when ``index (T, B)`` (from lengths) is given."""
    if index is None:
        return x.flip(0)
    return x.gather(0, index.unsqueeze(-1).expand(x.size(0), x.size(1), x.size(2)))


def _scripted_direction(mode: str, gi: Tensor, h0: Tensor, c0: Tensor | None, w: list[Tensor | None]) -> list[Tensor]:
    """One direction through the TorchScript loops, differentiated by TorchScript (export path)."""
    w_hh = w[W_HH]
    assert w_hh is not None
    if mode == "LSTM":
        assert c0 is not None
        out = kernels.lstm_forward(gi, h0, c0, w_hh, w[B_HH], w[LN_HH_W], w[LN_HH_B], w[LN_C_W], w[LN_C_B], False)
        return [out[0], out[1]]
    if mode == "GRU":
        return [kernels.gru_forward(gi, h0, w_hh, w[B_HH], w[LN_HH_W], w[LN_HH_B], False)[0]]
    return [kernels.rnn_forward(gi, h0, w_hh, w[B_HH], w[LN_HH_W], w[LN_HH_B], mode == "RNN_RELU", False)[0]]


@torch.jit.unused
def _python_direction(
    mode: str, gi: Tensor, h0: Tensor, c0: Tensor | None, w: list[Tensor | None], impl: str, graphs: bool
) -> list[Tensor]:
    """One direction in eager mode: the fused ``autograd.Function`` (``impl="script"``) or the compiled step."""
    if impl == "compile":
        from seqforge.fused.compiled import compiled_direction

        return compiled_direction(mode, gi, h0, c0, w)
    from seqforge.fused.function import fused_recurrence

    ln_hh = (w[LN_HH_W], w[LN_HH_B])
    ln_cell = (w[LN_C_W], w[LN_C_B])
    return fused_recurrence(mode, gi, h0, c0, w[W_HH], w[B_HH], ln_hh, ln_cell, graphs)


def _direction(
    mode: str, gi: Tensor, h0: Tensor, c0: Tensor | None, w: list[Tensor | None], impl: str, graphs: bool
) -> list[Tensor]:
    if torch.jit.is_scripting():
        return _scripted_direction(mode, gi, h0, c0, w)
    return _python_direction(mode, gi, h0, c0, w, impl, graphs)


def stack_forward(
    x: Tensor,
    hx: list[Tensor],
    lengths: Tensor | None,
    weights: list[list[Tensor | None]],
    mode: str,
    num_layers: int,
    num_directions: int,
    dropout: float,
    training: bool,
    impl: str = "script",
    graphs: bool = True,
) -> tuple[Tensor, list[Tensor]]:
    """Run a stacked (bi)directional recurrent layer.

    Args:
        x: time-major input ``(T, B, I)``.
        hx: ``[h0]`` or ``[h0, c0]``, each ``(num_layers * num_directions, B, H)``.
        lengths: ``None`` or int64 ``(B,)`` in ``[1, T]`` on ``x.device``.
        weights: per ``layer * num_directions + direction``, the ten entries of ``LayerWeights``.
        mode: ``"LSTM"``, ``"GRU"``, ``"RNN_TANH"`` or ``"RNN_RELU"``.
        dropout, training: inter-layer dropout ``F.dropout(out, dropout, training)`` after every layer but the last.
        impl: ``"script"`` (fused autograd.Function) or ``"compile"`` (compiled step); ignored when scripted.
        graphs: allow CUDA-graph capture of the fused loops.

    Returns:
        ``(output (T, B, D*H) with padded steps zero, [h_n] or [h_n, c_n] each (num_layers*D, B, H))``.
    """
    steps, batch = x.size(0), x.size(1)
    index: Tensor | None = None
    valid: Tensor | None = None
    if lengths is not None:
        t = torch.arange(steps, device=x.device).unsqueeze(1)  # (T, 1)
        valid = t < lengths  # (T, B)
        index = torch.where(valid, lengths - 1 - t, t)
    rows = torch.arange(batch, device=x.device)
    finals: list[list[Tensor]] = [[] for _ in range(len(hx))]
    layer_input = x
    for layer in range(num_layers):
        outs: list[Tensor] = []
        for direction in range(num_directions):
            k = layer * num_directions + direction
            w = weights[k]
            w_ih = w[W_IH]
            assert w_ih is not None
            inp = layer_input if direction == 0 else reverse_time(layer_input, index)
            gi = input_projection(inp, w_ih, w[B_IH], w[LN_IH_W], w[LN_IH_B])  # (T, B, G*H)
            c0 = hx[1][k] if len(hx) > 1 else None
            states = _direction(mode, gi, hx[0][k], c0, w, impl, graphs)  # each (T, B, H)
            for j in range(len(states)):
                finals[j].append(states[j][-1] if lengths is None else states[j][lengths - 1, rows])
            outs.append(states[0] if direction == 0 else reverse_time(states[0], index))
        layer_input = torch.cat(outs, 2) if len(outs) > 1 else outs[0]
        if valid is not None:
            layer_input = layer_input * valid.unsqueeze(-1).to(layer_input.dtype)
        if layer < num_layers - 1 and dropout > 0.0:
            layer_input = F.dropout(layer_input, dropout, training)
    return layer_input, [torch.stack(f) for f in finals]
