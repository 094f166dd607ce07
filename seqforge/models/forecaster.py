"""Forecaster: encode a history window, predict the next ``horizon`` values of the target series.

Feature 0 of the history is the target series (other features, if any, are covariates).

- ``strategy="direct"``: one linear head maps the encoder summary to all ``horizon`` steps at once.
- ``strategy="autoregressive"``: a decoder starts from a bridge of the encoder summary and feeds each
  step's point forecast back as the next input, starting from the last observed value.

``window_norm`` makes the net see each window relative to its own level (instance normalization without
learned parameters): ``"last"`` subtracts the last observed value of the target series, ``"mean"`` its
mean over the valid steps, from feature 0 of the history, and adds it back to every location output
(the point forecast, the Gaussian mean, every quantile). With a log-scaled series that is a forecast of
ratios to the window's level, so a trending series does not leave the range the net was trained on.
``season=S`` goes one step further: the net forecasts the correction to the seasonal naive forecast
(step ``k`` of the horizon starts from the value ``S`` steps earlier, ``y[t + k - S]``, repeated
season-wise when ``horizon > S``), so for a seasonal series it only has to learn the change from one
season to the next. Every window needs at least ``S`` valid steps.

Context beyond the history window (a global model over many series, e.g. :class:`seqforge.data.panel.PanelDataModule`):
``future_size`` known-future covariates per horizon step, ``future`` ``(B, horizon, future_size)``, and
static categorical features, ``static`` ``(B, len(static_cardinalities))`` int64 ids, each embedded in
``static_embedding_dim`` dimensions. The direct head reads the encoder summary, the static embeddings and
the flattened future covariates; the autoregressive decoder starts from a bridge of the summary and the
static embeddings and reads each step's future covariates beside the fed-back value.

Heads (the last output dim ``P``): ``"point"`` (``P = 1``), ``"gaussian"`` (``P = 2``: mean, variance)
and ``"quantile"`` (``P = len(quantiles)``, one channel per quantile level).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqforge.layers.attention import length_mask
from seqforge.layers.spec import RecurrentSpec, SpecLike
from seqforge.models.common import SequenceEncoder, StateBridge, decoder_step, sequence_masks

HEADS = ("point", "gaussian", "quantile")
STRATEGIES = ("direct", "autoregressive")
WINDOW_NORMS = ("none", "last", "mean")


class Forecaster(nn.Module):
    """``forward(history, lengths=None)``: ``history`` ``(B, W, input_size)`` -> ``(B, horizon, P)``.

    ``rnn``: one :class:`~seqforge.layers.spec.RecurrentSpec` (or a mapping of its keys) for the encoder and
    the autoregressive decoder; ``bidirectional`` is the encoder's.

    Example::

        >>> import torch
        >>> from seqforge.models import Forecaster
        >>> net = Forecaster(horizon=4, rnn={"hidden_size": 8}, head="quantile", quantiles=(0.1, 0.5, 0.9))
        >>> net(torch.randn(2, 12, 1)).shape
        torch.Size([2, 4, 3])
    """

    def __init__(
        self,
        horizon: int,
        input_size: int = 1,
        rnn: SpecLike = None,
        strategy: str = "direct",
        head: str = "point",
        quantiles: tuple[float, ...] = (0.1, 0.5, 0.9),
        window_norm: str = "none",
        season: int | None = None,
        future_size: int = 0,
        static_cardinalities: Sequence[int] = (),
        static_embedding_dim: int = 4,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if strategy not in STRATEGIES:
            raise ValueError(f"{name}: strategy must be one of {STRATEGIES}, got {strategy!r}")
        if head not in HEADS:
            raise ValueError(f"{name}: head must be one of {HEADS}, got {head!r}")
        if head == "quantile" and (not quantiles or not all(0 < q < 1 for q in quantiles)):
            raise ValueError(f"{name}: quantiles must be levels in (0, 1), got {quantiles!r}")
        if window_norm not in WINDOW_NORMS:
            raise ValueError(f"{name}: window_norm must be one of {WINDOW_NORMS}, got {window_norm!r}")
        if horizon < 1:
            raise ValueError(f"{name}: horizon must be >= 1, got {horizon}")
        if season is not None and season < 1:
            raise ValueError(f"{name}: season must be a period >= 1 (or None), got {season}")
        if future_size < 0 or static_embedding_dim < 1 or any(c < 1 for c in static_cardinalities):
            raise ValueError(f"{name}: future_size must be >= 0, static_embedding_dim >= 1 and every static "
                             f"cardinality >= 1, got future_size={future_size}, static_embedding_dim="
                             f"{static_embedding_dim}, static_cardinalities={list(static_cardinalities)}")
        self.season = season
        self.future_size = future_size
        # one embedding table per static categorical feature
        self.static_embeddings = nn.ModuleList(nn.Embedding(c, static_embedding_dim) for c in static_cardinalities)
        self.horizon, self.strategy, self.head_kind, self.window_norm = horizon, strategy, head, window_norm
        self.quantiles = tuple(float(q) for q in quantiles) if head == "quantile" else ()
        self.num_params = {"point": 1, "gaussian": 2, "quantile": len(self.quantiles)}[head]
        spec = RecurrentSpec.of(name, rnn, hidden_size=64)
        self.encoder = SequenceEncoder(input_size=input_size, rnn=spec, owner=name)
        width = self.encoder.output_size + static_embedding_dim * len(static_cardinalities)
        if strategy == "direct":
            self.head = nn.Linear(width + horizon * future_size, horizon * self.num_params)
        else:
            decoder = spec.build(1 + future_size, bidirectional=False, owner=name)
            self.bridge = StateBridge(width, decoder)  # registered first, as before decoders had any cell
            self.decoder = decoder
            self.head = nn.Linear(spec.hidden_size, self.num_params)

    @property
    def static_cardinalities(self) -> list[int]:
        """The number of categories of each static feature (the rows of its embedding table)."""
        return [cast(nn.Embedding, table).num_embeddings for table in self.static_embeddings]

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

    @staticmethod
    def _lengths(history: Tensor, lengths: Tensor | None) -> Tensor:
        """``lengths`` on ``history``'s device, or the full window length for every row: ``(B,)``."""
        if lengths is None:
            return torch.full((history.shape[0],), history.shape[1], device=history.device)
        return lengths.to(history.device)

    def level(self, history: Tensor, lengths: Tensor | None) -> Tensor:
        """Per-window level of the target series that ``window_norm`` removes: ``(B, 1)``."""
        target = history[..., 0]  # (B, W)
        if self.window_norm == "none":
            return target.new_zeros(target.shape[0], 1)
        lengths = self._lengths(history, lengths)
        if self.window_norm == "last":
            return target.gather(1, (lengths - 1).unsqueeze(1))
        valid = length_mask(lengths, target.shape[1])  # (B, W)
        return (target * valid).sum(1, keepdim=True) / lengths.unsqueeze(1).to(target.dtype)

    def seasonal_naive(self, history: Tensor, lengths: Tensor | None) -> Tensor:
        """``(B, horizon)``: for step ``k`` the target series' value ``season`` steps before it."""
        assert self.season is not None
        lengths = self._lengths(history, lengths)
        if torch.compiler.is_exporting():  # values unknown while tracing: checked when the program runs
            torch._assert_async((lengths >= self.season).all(), f"season={self.season} needs longer windows")
        elif int(lengths.min()) < self.season:
            raise ValueError(f"{type(self).__name__}: season={self.season} needs windows of at least {self.season} "
                             f"valid steps, got a window of {int(lengths.min())}")
        k = torch.arange(self.horizon, device=history.device) % self.season  # (H,)
        index = (lengths - self.season).unsqueeze(1) + k  # (B, H)
        return history[..., 0].gather(1, index)

    def forward(
        self, history: Tensor, lengths: Tensor | None = None, future: Tensor | None = None, static: Tensor | None = None
    ) -> Tensor:
        """``future`` ``(B, horizon, future_size)`` and ``static`` ``(B, S)`` int64: needed when the net was
        built with ``future_size > 0`` / ``static_cardinalities``, refused otherwise."""
        self._check_context(history, future, static)
        level = self.level(history, lengths)  # (B, 1)
        if self.window_norm != "none":
            history = torch.cat([history[..., :1] - level.unsqueeze(1), history[..., 1:]], dim=-1)
        out = self._forecast(history, lengths, future, static)  # (B, H, P), relative to the level
        if self.season is not None:  # relative to the seasonal naive forecast instead
            level = self.seasonal_naive(history, lengths) + level  # (B, H)
        elif self.window_norm == "none":
            return out
        if self.head_kind == "gaussian":  # shift the mean, not the variance
            return torch.stack([out[..., 0] + level, out[..., 1]], dim=-1)
        return out + level.unsqueeze(-1)

    def _check_context(self, history: Tensor, future: Tensor | None, static: Tensor | None) -> None:
        name, B = type(self).__name__, history.shape[0]
        expected = (B, self.horizon, self.future_size)
        if self.future_size and (future is None or tuple(future.shape) != expected):
            got = None if future is None else tuple(future.shape)
            raise ValueError(f"{name}: future must be (B, horizon, future_size) = {expected}, got {got}")
        if not self.future_size and future is not None and future.numel():
            raise ValueError(f"{name}: future covariates {tuple(future.shape)} given to a net built with future_size=0")
        num_static = len(self.static_embeddings)
        if num_static and (static is None or tuple(static.shape) != (B, num_static)):
            got = None if static is None else tuple(static.shape)
            raise ValueError(f"{name}: static must be (B, {num_static}) int64 ids, got {got}")
        if not num_static and static is not None and static.numel():
            raise ValueError(f"{name}: static features {tuple(static.shape)} given to a net built without "
                             "static_cardinalities")
        if num_static:
            assert static is not None
            self._check_static_ids(static)

    def _check_static_ids(self, static: Tensor) -> None:
        """Column ``k`` of ``static`` must hold ids in ``[0, static_cardinalities[k])`` (an assertion in an
        exported program, where the values are unknown)."""
        cardinalities = torch.tensor(self.static_cardinalities, device=static.device)
        in_range = (static >= 0) & (static < cardinalities)  # (B, S)
        if torch.compiler.is_exporting():
            torch._assert_async(in_range.all(), f"{type(self).__name__}: static ids must lie in [0, cardinality) "
                                "per column (static_cardinalities)")  # fmt: skip
            return
        if not bool(in_range.all()):
            k = int((~in_range).any(0).nonzero()[0])
            bad = static[:, k][~in_range[:, k]][0]
            raise ValueError(f"{type(self).__name__}: static column {k} must hold ids in [0, {int(cardinalities[k])}) "
                             f"(static_cardinalities), got {int(bad)}")

    def _forecast(
        self, history: Tensor, lengths: Tensor | None, future: Tensor | None, static: Tensor | None
    ) -> Tensor:
        _, state = self.encoder(history, lengths)
        summary = self.encoder.summary(state)  # (B, D*H)
        if len(self.static_embeddings):
            assert static is not None
            embedded = [table(static[:, i]) for i, table in enumerate(self.static_embeddings)]  # S x (B, E)
            summary = torch.cat([summary, *embedded], dim=-1)
        B = history.shape[0]
        if self.strategy == "direct":
            if self.future_size:
                assert future is not None
                summary = torch.cat([summary, future.flatten(1)], dim=-1)  # (B, width + H * F)
            return self._params(self.head(summary).view(B, self.horizon, self.num_params))
        last = history[..., 0].gather(1, self._lengths(history, lengths).unsqueeze(1) - 1)  # (B, 1)
        hidden, value, outs = self.bridge(summary), last, []
        masks = sequence_masks(self.decoder, B)  # one recurrent-dropout draw for the whole horizon
        for k in range(self.horizon):
            step_input = torch.cat([value, future[:, k]], dim=-1) if future is not None and self.future_size else value
            out, hidden = decoder_step(self.decoder, step_input, hidden, masks)  # (B, H)
            step = self._params(self.head(out))  # (B, P)
            outs.append(step)
            value = self.point(step.unsqueeze(1))  # (B, 1)
        return torch.stack(outs, dim=1)

    def init_state(self, batch_size: int) -> Any:
        """Zero state for :meth:`step`."""
        return self.encoder.init_state(batch_size)

    def step(self, x_t: Tensor, state: Any) -> tuple[Tensor, Any]:
        """Streaming: the next history value ``x_t`` ``(B, input_size)`` -> ``(forecast (B, horizon, P), state)``
        from the history fed so far, as :meth:`forward`. Needs ``strategy="direct"``, ``window_norm="none"`` and no
        ``season`` (those read the whole window), no future or static context and a unidirectional encoder."""
        if self.future_size or len(self.static_embeddings):
            raise ValueError(f"{type(self).__name__}: step() streams the history alone; this net also reads future "
                             "covariates or static features (use forward)")
        for option, value, streamable in (("strategy", self.strategy, "direct"), ("window_norm", self.window_norm,
                                          "none"), ("season", self.season, None)):  # fmt: skip
            if value != streamable:
                raise ValueError(f"{type(self).__name__}: step() needs {option}={streamable!r}, got {value!r}")
        _, state = self.encoder.step(x_t, state)
        summary = self.encoder.summary(state)
        return self._params(self.head(summary).view(x_t.shape[0], self.horizon, self.num_params)), state
