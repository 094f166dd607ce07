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


def _scripted_direction(
    mode: str, gi: Tensor, h0: Tensor, c0: Tensor | None, w_hh: Tensor, b_hh: Tensor | None,
    ln_hh_w: Tensor | None, ln_hh_b: Tensor | None, ln_c_w: Tensor | None, ln_c_b: Tensor | None,
    mask: Tensor | None,
) -> list[Tensor]:  # fmt: skip
    """One direction through the TorchScript loops, differentiated by TorchScript (export path)."""
    if mode == "LSTM":
        assert c0 is not None
        out = kernels.lstm_forward(gi, h0, c0, w_hh, b_hh, ln_hh_w, ln_hh_b, ln_c_w, ln_c_b, mask, False)
        return [out[0], out[1]]
    if mode == "GRU":
        return [kernels.gru_forward(gi, h0, w_hh, b_hh, ln_hh_w, ln_hh_b, mask, False)[0]]
    return [kernels.rnn_forward(gi, h0, w_hh, b_hh, ln_hh_w, ln_hh_b, mode == "RNN_RELU", mask, False)[0]]


@torch.jit.unused
def _python_direction(
    mode: str, gi: Tensor, h0: Tensor, c0: Tensor | None, w_hh: Tensor, b_hh: Tensor | None,
    ln_hh_w: Tensor | None, ln_hh_b: Tensor | None, ln_c_w: Tensor | None, ln_c_b: Tensor | None,
    mask: Tensor | None, impl: str, graphs: bool,
) -> list[Tensor]:  # fmt: skip
    """One direction in eager mode: the fused ``autograd.Function`` (``impl="script"``) or the compiled step."""
    if impl == "compile":
        from seqforge.fused.compiled import compiled_direction

        return compiled_direction(mode, gi, h0, c0, (w_hh, b_hh, ln_hh_w, ln_hh_b), (ln_c_w, ln_c_b), mask)
    from seqforge.fused.function import fused_recurrence

    return fused_recurrence(mode, gi, h0, c0, w_hh, b_hh, (ln_hh_w, ln_hh_b), (ln_c_w, ln_c_b), mask, graphs)


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
    recurrent_dropout: float = 0.0,
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
        recurrent_dropout: variational dropout on ``h`` before ``W_hh`` in training: one Bernoulli(1 - p) / (1 - p)
            mask ``(B, H)`` per layer and direction, drawn in the eager backend's order (same RNG stream).

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
            w_ih, w_hh, b_ih, b_hh, ln_ih_w, ln_ih_b, ln_hh_w, ln_hh_b, ln_c_w, ln_c_b = weights[k]
            assert w_ih is not None and w_hh is not None
            inp = layer_input if direction == 0 else reverse_time(layer_input, index)
            if mode != "GRU" and ln_hh_w is None and b_ih is not None and b_hh is not None:
                # Fold b_hh into the input projection: the loop's step is then one addmm + pointwise.
                gi = input_projection(inp, w_ih, b_ih + b_hh, ln_ih_w, ln_ih_b)  # (T, B, G*H), one matmul
                b_hh = None
            else:
                gi = input_projection(inp, w_ih, b_ih, ln_ih_w, ln_ih_b)
                if ln_hh_w is not None and ln_hh_b is not None and b_hh is not None:
                    # LN_hh(.) + b_hh == layer norm with shift ln_hh_b + b_hh: one op less per step.
                    ln_hh_b = ln_hh_b + b_hh
                    b_hh = None
            h0, c0 = hx[0][k], (hx[1][k] if len(hx) > 1 else None)
            mask: Tensor | None = None
            if training and recurrent_dropout > 0.0:
                mask = torch.bernoulli(torch.full_like(h0, 1.0 - recurrent_dropout)) / (1.0 - recurrent_dropout)
            if torch.jit.is_scripting():
                states = _scripted_direction(mode, gi, h0, c0, w_hh, b_hh, ln_hh_w, ln_hh_b, ln_c_w, ln_c_b, mask)
            else:
                states = _python_direction(mode, gi, h0, c0, w_hh, b_hh, ln_hh_w, ln_hh_b, ln_c_w, ln_c_b, mask,
                                           impl, graphs)  # fmt: skip
            for j in range(len(states)):
                finals[j].append(states[j][-1] if lengths is None else states[j][lengths - 1, rows])
            outs.append(states[0] if direction == 0 else reverse_time(states[0], index))
        layer_input = torch.cat(outs, 2) if len(outs) > 1 else outs[0]
        if valid is not None:
            layer_input = layer_input * valid.unsqueeze(-1).to(layer_input.dtype)
        if layer < num_layers - 1 and dropout > 0.0:
            layer_input = F.dropout(layer_input, dropout, training)
    return layer_input, [torch.stack(f) for f in finals]
