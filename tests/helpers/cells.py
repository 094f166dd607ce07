"""Cells written the way a user would, outside the package, against the contract of ``seqforge.cells.base``.

Importable as ``helpers.cells.<Cell>`` (``tests/`` on the path), e.g. for
``model.net.rnn.cell={_target_:helpers.cells.PeepholeLSTMCell,_partial_:true}``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class PeepholeLSTMCell(nn.Module):
    """LSTM with peephole connections (Gers & Schmidhuber, 2000): ``i, f`` see ``c_{t-1}``, ``o`` sees ``c_t``."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.ih = nn.Linear(input_size, 4 * hidden_size)
        self.hh = nn.Linear(hidden_size, 4 * hidden_size, bias=False)
        self.peep = nn.Parameter(0.1 * torch.randn(3, hidden_size))

    def init_state(self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None
                   ) -> tuple[Tensor, Tensor]:  # fmt: skip
        zeros = torch.zeros(batch_size, self.hidden_size, device=device, dtype=dtype)
        return zeros, zeros

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        h, c = state
        i, f, g, o = (self.ih(x) + self.hh(h)).chunk(4, 1)
        c = torch.sigmoid(f + self.peep[1] * c) * c + torch.sigmoid(i + self.peep[0] * c) * torch.tanh(g)
        h = torch.sigmoid(o + self.peep[2] * c) * torch.tanh(c)
        return h, (h, c)


class IndRNNCell(nn.Module):
    """IndRNN-like cell: ``h' = relu(W x + b + u * h)`` with a per-unit recurrent weight ``u``."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.linear = nn.Linear(input_size, hidden_size)
        self.u = nn.Parameter(torch.empty(hidden_size).uniform_(0.0, 1.0))

    def init_state(self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None
                   ) -> Tensor:  # fmt: skip
        return torch.zeros(batch_size, self.hidden_size, device=device, dtype=dtype)

    def forward(self, x: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        h = torch.relu(self.linear(x) + self.u * h)
        return h, h



class SplitPeepholeLSTMCell(PeepholeLSTMCell):
    """:class:`PeepholeLSTMCell` with the optional input split of the contract: ``x W_ih^T + b`` for all steps at
    once, then the recurrent rest. ``forward`` stays the parent's, the independent reference."""

    def project_input(self, x: Tensor) -> Tensor:
        return self.ih(x)  # (T, B, 4H)

    def step_projected(self, p: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        h, c = state
        i, f, g, o = (p + self.hh(h)).chunk(4, 1)
        c = torch.sigmoid(f + self.peep[1] * c) * c + torch.sigmoid(i + self.peep[0] * c) * torch.tanh(g)
        h = torch.sigmoid(o + self.peep[2] * c) * torch.tanh(c)
        return h, (h, c)


class SplitIndRNNCell(IndRNNCell):
    """:class:`IndRNNCell` with the optional input split (a lone-tensor state); ``forward`` stays the parent's."""

    def project_input(self, x: Tensor) -> Tensor:
        return self.linear(x)  # (T, B, H)

    def step_projected(self, p: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        h = torch.relu(p + self.u * h)
        return h, h
