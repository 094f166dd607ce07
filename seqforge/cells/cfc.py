r"""CfC: the closed-form continuous-time cell of the liquid time-constant network family.

Hasani, Lechner, Amini, Liebenwein, Ray, Tschaikowski, Teschl and Rus, 2022, "Closed-form continuous-time
neural networks", Nature Machine Intelligence 4, 992-1003 (arXiv:2106.13898).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from seqforge.cells.indrnn import check_sizes, check_step, zero_state


class LeCunTanh(nn.Module):
    """LeCun's scaled tanh, ``1.7159 * tanh(2/3 * x)`` (LeCun et al., 1998, "Efficient BackProp")."""

    def forward(self, x: Tensor) -> Tensor:
        return 1.7159 * torch.tanh(0.666 * x)


_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "lecun_tanh": LeCunTanh,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}


class CfCCell(nn.Module):
    r"""CfC cell, the paper's gated ("default") variant with a shared backbone.

    .. math::
        z = \mathrm{backbone}([u_t, h_{t-1}]), \qquad
        f = W_f z + b_f, \quad g = \tanh(W_g z + b_g), \quad \eta = \tanh(W_\eta z + b_\eta) \\
        h_t = \sigma(-f \,\Delta t) \odot g + (1 - \sigma(-f \,\Delta t)) \odot \eta

    which is the paper's ``x(t) = σ(−f t) ⊙ g + (1 − σ(−f t)) ⊙ h`` with its three heads ``f`` (the
    time-constant head), ``g`` and ``h`` (here ``eta``, so that ``h`` stays the hidden state) on one
    backbone. The backbone is ``backbone_layers`` blocks of ``Linear -> activation`` with
    ``backbone_units`` units (``backbone_layers=0``: the heads read ``[u_t, h_{t-1}]`` directly). The
    ``tanh`` on the ``g`` and ``h`` heads follows the authors' code and keeps the state bounded. Not
    implemented: the ``no_gate`` and minimal ("pure") variants and backbone dropout (the recurrent
    layer owns regularization).

    Elapsed time: with ``time_gaps=False``, ``Δt = 1`` at every step and ``u_t = x_t``. With
    ``time_gaps=True`` the **last feature** of ``x_t`` is ``Δt``, the time elapsed since the previous
    step (expected ``>= 0``), and ``u_t = x_t[:, :-1]``: the cell learns from ``input_size - 1``
    features, so ``input_size`` counts the time column. Feeding a column of ones is the same as
    ``time_gaps=False`` with one input feature fewer (the parameter shapes are identical). Through
    :class:`seqforge.Recurrent` the gaps reach every layer and direction: a deeper layer's cells are built with
    one input feature more and read the layer below's output with the ``Δt`` column appended, and a reverse
    direction reads the gaps of the reversed sequence (at step ``t``, reached from step ``t + 1``, the gap
    ``Δt_{t+1}``; at its first step ``Δt_0``), within each sequence's length (see
    :mod:`seqforge.layers.loop`).

    Initialization: Glorot-uniform weights (as the authors' code), zero biases.

    Args:
        input_size: features ``I`` of ``x_t`` (with ``time_gaps``, ``I - 1`` features plus ``Δt``).
        hidden_size: units ``H``.
        backbone_units: width of the backbone.
        backbone_layers: number of ``Linear -> activation`` blocks (``>= 0``).
        activation: backbone activation, one of ``lecun_tanh`` (default, as the authors), ``tanh``,
            ``relu``, ``gelu``, ``silu``.
        time_gaps: read ``Δt`` from the last feature of ``x_t``.

    Parameters: ``backbone.{0,2,...}.weight/bias`` (the linear blocks), ``f_head``, ``g_head``,
    ``h_head`` (each an ``nn.Linear(backbone_units, H)``).

    Shapes: ``forward(x_t (B, I), state (B, H)) -> (h_t (B, H), new_state (B, H))`` (the same tensor);
    ``init_state(B)`` gives zeros ``(B, H)``.

    Example:
        >>> cell = CfCCell(3 + 1, 32, time_gaps=True)      # 3 features, then Δt
        >>> x_t = torch.cat([torch.randn(5, 3), torch.rand(5, 1)], dim=1)
        >>> h_t, state = cell(x_t, cell.init_state(5))
        >>> h_t.shape
        torch.Size([5, 32])
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        backbone_units: int = 128,
        backbone_layers: int = 1,
        activation: str = "lecun_tanh",
        time_gaps: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        check_sizes("CfCCell", input_size, hidden_size)
        if not isinstance(backbone_units, int) or isinstance(backbone_units, bool) or backbone_units <= 0:
            raise ValueError(f"CfCCell: backbone_units must be a positive int, got {backbone_units!r}")
        if not isinstance(backbone_layers, int) or isinstance(backbone_layers, bool) or backbone_layers < 0:
            raise ValueError(f"CfCCell: backbone_layers must be a non-negative int, got {backbone_layers!r}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"CfCCell: activation must be one of {tuple(_ACTIVATIONS)}, got {activation!r}")
        if not isinstance(time_gaps, bool):
            raise ValueError(f"CfCCell: time_gaps must be a bool, got {time_gaps!r}")
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.backbone_units = backbone_units
        self.backbone_layers = backbone_layers
        self.activation = activation
        self.time_gaps = time_gaps
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        width = input_size - int(time_gaps) + hidden_size
        blocks: list[nn.Module] = []
        for _ in range(backbone_layers):
            blocks += [nn.Linear(width, backbone_units, **factory), _ACTIVATIONS[activation]()]
            width = backbone_units
        self.backbone = nn.Sequential(*blocks)
        self.f_head = nn.Linear(width, hidden_size, **factory)
        self.g_head = nn.Linear(width, hidden_size, **factory)
        self.h_head = nn.Linear(width, hidden_size, **factory)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Glorot-uniform weights, zero biases."""
        for name, param in self.named_parameters():
            nn.init.xavier_uniform_(param) if name.endswith("weight") else nn.init.zeros_(param)

    @torch.jit.export
    def init_state(
        self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> Tensor:
        """Zero state ``(batch_size, H)``, on the parameters' device/dtype unless given."""
        return zero_state(batch_size, self.hidden_size, self.f_head.weight, device, dtype)

    def forward(self, x_t: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        check_step("CfCCell", x_t, state, self.input_size, self.hidden_size)
        u = x_t[:, :-1] if self.time_gaps else x_t
        z = self.backbone(torch.cat([u, state], dim=1))  # (B, backbone_units)
        f = self.f_head(z)
        if self.time_gaps:
            f = f * x_t[:, -1:]  # f * Δt, Δt (B, 1)
        gate = torch.sigmoid(-f)
        h = gate * torch.tanh(self.g_head(z)) + (1.0 - gate) * torch.tanh(self.h_head(z))
        return h, h

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, backbone_units={self.backbone_units}, "
            f"backbone_layers={self.backbone_layers}, activation={self.activation!r}, time_gaps={self.time_gaps}"
        )
