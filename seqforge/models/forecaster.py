"""Forecaster: encode a history window, predict the next ``horizon`` values of the target series.

Feature 0 of the history is the target series (other features, if any, are covariates).

- ``strategy="direct"``: one linear head maps the encoder summary to all ``horizon`` steps at once.
- ``strategy="autoregressive"``: a decoder starts from a bridge of the encoder summary and feeds each
  step's point forecast back as the next input, starting from the last observed value.

Heads (the last output dim ``P``): ``"point"`` (``P = 1``), ``"gaussian"`` (``P = 2``: mean, variance)
and ``"quantile"`` (``P = len(quantiles)``, one channel per quantile level).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqforge.layers.recurrent import make_recurrent
from seqforge.models.common import SequenceEncoder, StateBridge

HEADS = ("point", "gaussian", "quantile")
STRATEGIES = ("direct", "autoregressive")


class Forecaster(nn.Module):
    """``forward(history, lengths=None)``: ``history`` ``(B, W, input_size)`` -> ``(B, horizon, P)``.

    Example::

        >>> import torch
        >>> from seqforge.models import Forecaster
        >>> net = Forecaster(horizon=4, hidden_size=8, head="quantile", quantiles=(0.1, 0.5, 0.9))
        >>> net(torch.randn(2, 12, 1)).shape
        torch.Size([2, 4, 3])
    """

    def __init__(
        self,
        horizon: int,
        input_size: int = 1,
        cell: str = "lstm",
        hidden_size: int = 64,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        strategy: str = "direct",
        head: str = "point",
        quantiles: tuple[float, ...] = (0.1, 0.5, 0.9),
        backend: str = "eager",
        layer_norm: bool = False,
        rnn_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if strategy not in STRATEGIES:
            raise ValueError(f"{name}: strategy must be one of {STRATEGIES}, got {strategy!r}")
        if head not in HEADS:
            raise ValueError(f"{name}: head must be one of {HEADS}, got {head!r}")
        if head == "quantile" and (not quantiles or not all(0 < q < 1 for q in quantiles)):
            raise ValueError(f"{name}: quantiles must be levels in (0, 1), got {quantiles!r}")
        if horizon < 1:
            raise ValueError(f"{name}: horizon must be >= 1, got {horizon}")
        self.horizon, self.strategy, self.head_kind = horizon, strategy, head
        self.quantiles = tuple(float(q) for q in quantiles) if head == "quantile" else ()
        self.num_params = {"point": 1, "gaussian": 2, "quantile": len(self.quantiles)}[head]
        self.encoder = SequenceEncoder(
            input_size=input_size, cell=cell, hidden_size=hidden_size, num_layers=num_layers,
            bidirectional=bidirectional, dropout=dropout, backend=backend, layer_norm=layer_norm,
            rnn_options=rnn_options, owner=name,
        )  # fmt: skip
        width = self.encoder.output_size
        if strategy == "direct":
            self.head = nn.Linear(width, horizon * self.num_params)
        else:
            self.bridge = StateBridge(width, hidden_size, num_layers, cell)
            self.decoder = make_recurrent(
                cell, 1, hidden_size, num_layers=num_layers, dropout=dropout if num_layers > 1 else 0.0,
                batch_first=True, backend=backend, layer_norm=layer_norm, **(rnn_options or {}),
            )  # fmt: skip
            self.head = nn.Linear(hidden_size, self.num_params)

    def _params(self, raw: Tensor) -> Tensor:
        if self.head_kind == "gaussian":
            return torch.stack([raw[..., 0], F.softplus(raw[..., 1]) + 1e-6], dim=-1)
        return raw

    def point(self, out: Tensor) -> Tensor:
        """Point forecast ``(B, horizon)`` from ``forward``'s output: the mean, or the quantile nearest 0.5."""
        if self.head_kind != "quantile":
            return out[..., 0]
        median = min(range(len(self.quantiles)), key=lambda i: abs(self.quantiles[i] - 0.5))
        return out[..., median]

    def forward(self, history: Tensor, lengths: Tensor | None = None) -> Tensor:
        _, state = self.encoder(history, lengths)
        summary = self.encoder.summary(state)  # (B, D*H)
        B = history.shape[0]
        if self.strategy == "direct":
            return self._params(self.head(summary).view(B, self.horizon, self.num_params))
        if lengths is None:
            last = history[:, -1, :1]
        else:
            last = history[torch.arange(B, device=history.device), lengths.to(history.device) - 1, :1]  # (B, 1)
        hidden, value, outs = self.bridge(summary), last, []
        for _ in range(self.horizon):
            out, hidden = self.decoder(value.unsqueeze(1), hidden)
            step = self._params(self.head(out.squeeze(1)))  # (B, P)
            outs.append(step)
            value = self.point(step.unsqueeze(1))  # (B, 1)
        return torch.stack(outs, dim=1)
