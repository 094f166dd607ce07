"""Pure one-step functions shared by the cells, the eager layer loop and the fused backends.

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
    out = F.layer_norm(F.linear(x, weight), (weight.shape[0],), ln_weight, ln_bias, LAYER_NORM_EPS)
    return out if bias is None else out + bias


def rnn_pointwise(gi: Tensor, gh: Tensor, nonlinearity: str = "tanh") -> Tensor:
    """Vanilla RNN: ``h' = act(gi + gh)``. Shapes ``(B, H)``."""
    pre = gi + gh
    return torch.tanh(pre) if nonlinearity == "tanh" else torch.relu(pre)


def lstm_pointwise(
    gi: Tensor,
    gh: Tensor,
    c: Tensor,
    ln_cell_weight: Tensor | None = None,
    ln_cell_bias: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """LSTM: ``i, f, g, o`` from ``gi + gh`` (each ``(B, 4H)``); ``c' = f*c + i*g``; ``h' = o*tanh(c')``.

    With ``ln_cell_weight`` the output is ``h' = o * tanh(LN_cell(c'))``. Returns ``(h', c')``, each ``(B, H)``.
    """
    i, f, g, o = (gi + gh).chunk(4, dim=-1)
    c_next = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    c_out = c_next
    if ln_cell_weight is not None:
        c_out = F.layer_norm(c_next, (c_next.shape[-1],), ln_cell_weight, ln_cell_bias, LAYER_NORM_EPS)
    return torch.sigmoid(o) * torch.tanh(c_out), c_next


def gru_pointwise(gi: Tensor, gh: Tensor, h: Tensor) -> Tensor:
    """GRU: ``r = σ(gi_r + gh_r)``, ``z = σ(gi_z + gh_z)``, ``n = tanh(gi_n + r * gh_n)``,
    ``h' = (1 - z) * n + z * h``. ``gi, gh (B, 3H)``, ``h (B, H)``."""
    i_r, i_z, i_n = gi.chunk(3, dim=-1)
    h_r, h_z, h_n = gh.chunk(3, dim=-1)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return n + z * (h - n)


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
