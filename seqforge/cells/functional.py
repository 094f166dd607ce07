"""The recurrence math, written once in the TorchScript subset.

Called by the eager cells (:mod:`seqforge.cells.cells`), by the hand-written fused loops
(:mod:`seqforge.fused.kernels`, which also keep the intermediates their backward needs) and through both
by every backend.

A step is split the way fast implementations split it: the *input* projection ``gi`` can be computed once
for every time step, the *recurrent* projection ``gh`` is computed per step, and a pointwise function turns
``(gi, gh, state)`` into the next state. Gate order follows ``torch.nn``: LSTM ``i, f, g, o``; GRU ``r, z, n``.

Layer normalization (when its parameters are given) normalizes the projection over the whole gate vector
*before* the bias is added: ``project(x) = LN(x W^T) + b``. The LSTM also normalizes the cell state on the
way out: ``h' = o * tanh(LN_cell(c'))`` while the carried cell state ``c'`` stays un-normalized
(Ba et al., 2016, "Layer Normalization", section 3.1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

LAYER_NORM_EPS = 1e-5


def _empty(like: Tensor) -> Tensor:
    return torch.empty([0], dtype=like.dtype, device=like.device)


def layer_norm(x: Tensor, weight: Tensor, bias: Tensor | None, eps: float = LAYER_NORM_EPS) -> list[Tensor]:
    """Layer norm over the last dim of ``x (*, N)``: ``[y, mean (*, 1), rstd (*, 1)]`` (torch's native kernel)."""
    y, mean, rstd = torch.native_layer_norm(x, [x.size(-1)], weight, bias, eps)
    return [y, mean, rstd]


def project(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    ln_weight: Tensor | None = None,
    ln_bias: Tensor | None = None,
) -> Tensor:
    """Affine projection ``x W^T + b``, or ``LN(x W^T) + b`` when ``ln_weight`` is given.

    Shapes: ``x (*, in)``, ``weight (G*H, in)``, ``bias (G*H,)`` -> ``(*, G*H)``.
    """
    if ln_weight is None:
        return F.linear(x, weight, bias)
    out = layer_norm(F.linear(x, weight), ln_weight, ln_bias)[0]
    return out if bias is None else out + bias


def rnn_activation(pre: Tensor, relu: bool) -> Tensor:
    """Vanilla RNN: ``h' = relu(pre)`` or ``tanh(pre)`` with ``pre = gi + gh``. Shapes ``(B, H)``."""
    return torch.relu(pre) if relu else torch.tanh(pre)


def rnn_pointwise(gi: Tensor, gh: Tensor, nonlinearity: str = "tanh") -> Tensor:
    """Vanilla RNN: ``h' = act(gi + gh)``. Shapes ``(B, H)``."""
    return rnn_activation(gi + gh, nonlinearity == "relu")


def lstm_gates(pre: Tensor) -> list[Tensor]:
    """Activated LSTM gates ``[i, f, g, o]`` (each ``(B, H)``) from the pre-activation ``gi + gh (B, 4H)``."""
    i, f, g, o = pre.chunk(4, 1)
    return [torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)]


def lstm_state(
    gates: list[Tensor], c: Tensor, ln_cell_weight: Tensor | None, ln_cell_bias: Tensor | None
) -> list[Tensor]:
    """``c' = f*c + i*g``, ``h' = o*tanh(LN_cell(c'))`` (no ``LN_cell`` without its gain).

    Returns ``[h', c', tanh(LN_cell(c')), mean_c, rstd_c]`` (the statistics empty without layer norm).
    """
    i, f, g, o = gates[0], gates[1], gates[2], gates[3]
    c_next = f * c + i * g
    mean, rstd = _empty(c), _empty(c)
    c_out = c_next
    if ln_cell_weight is not None:
        normed = layer_norm(c_next, ln_cell_weight, ln_cell_bias)
        c_out, mean, rstd = normed[0], normed[1], normed[2]
    tanh_c = torch.tanh(c_out)
    return [o * tanh_c, c_next, tanh_c, mean, rstd]


def lstm_pointwise(
    gi: Tensor,
    gh: Tensor,
    c: Tensor,
    ln_cell_weight: Tensor | None = None,
    ln_cell_bias: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """LSTM step from ``gi, gh (B, 4H)`` and ``c (B, H)``: returns ``(h', c')``, each ``(B, H)``."""
    out = lstm_state(lstm_gates(gi + gh), c, ln_cell_weight, ln_cell_bias)
    return out[0], out[1]


def gru_update(gi: Tensor, gh: Tensor, h: Tensor) -> list[Tensor]:
    """GRU: ``r = σ(gi_r + gh_r)``, ``z = σ(gi_z + gh_z)``, ``n = tanh(gi_n + r * gh_n)``,
    ``h' = (1 - z) * n + z * h``. ``gi, gh (B, 3H)``, ``h (B, H)``. Returns ``[h', r, z, n, gh_n]``."""
    i_r, i_z, i_n = gi.chunk(3, 1)
    h_r, h_z, h_n = gh.chunk(3, 1)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return [n + z * (h - n), r, z, n, h_n]


def gru_pointwise(gi: Tensor, gh: Tensor, h: Tensor) -> Tensor:
    """GRU step (see :func:`gru_update`): ``h' (B, H)``."""
    return gru_update(gi, gh, h)[0]


def zoneout(prev: Tensor, new: Tensor, p: float, training: bool) -> Tensor:
    """Zoneout (Krueger et al., 2017): each unit keeps its previous value with probability ``p``.

    In training a fresh Bernoulli mask is drawn per call (i.e. per step); in evaluation the expectation
    ``p * prev + (1 - p) * new`` is used.
    """
    if p == 0.0:
        return new
    if training:
        keep = torch.bernoulli(torch.full_like(new, p))
        return torch.lerp(new, prev, keep)
    return torch.lerp(new, prev, torch.full_like(new, p))
