"""Many-to-one: read a whole sequence, emit one prediction (class logits or a regression vector)."""

from __future__ import annotations

from typing import Any, Literal, cast

import torch
from torch import Tensor, nn

from seqforge.cells.base import State
from seqforge.layers.attention import AdditiveAttention, length_mask
from seqforge.layers.spec import SpecLike
from seqforge.models.common import SequenceEncoder, exactly_one
from seqforge.models.frontends import ConvFrontEnd

POOLINGS = ("last", "mean", "max", "attention")


class SequenceClassifier(nn.Module):
    """Recurrent encoder, length-aware pooling, linear head.

    Give ``num_classes`` for classification (logits ``(B, num_classes)``) or ``output_size`` for
    regression (``(B, output_size)``); give ``input_size`` for float features ``(B, T, input_size)`` or
    ``vocab_size`` for token ids ``(B, T)`` (embedded with ``embedding_dim``, ``pad_id`` rows zero).
    ``rnn``: the encoder's :class:`~seqforge.layers.spec.RecurrentSpec` (or a mapping of its keys).

    Pooling over the encoder outputs ``(B, T, D*H)`` never looks at padding: ``"last"`` is the final
    state of each sequence (for a bidirectional encoder: forward at the last valid step, backward at step
    0), ``"mean"``/``"max"`` run over valid steps, ``"attention"`` is a learned-query additive attention.
    ``input_noise``: std of Gaussian noise added to float features while training (see ``SequenceEncoder``).
    ``frontend``: keywords of a :class:`~seqforge.models.frontends.ConvFrontEnd` run over float features
    before the encoder (``None`` or ``False``: none); the encoder then reads its ``channels[-1]`` features.

    Example::

        >>> import torch
        >>> from seqforge.models import SequenceClassifier
        >>> net = SequenceClassifier(num_classes=3, input_size=2, rnn={"hidden_size": 8})
        >>> net(torch.randn(4, 5, 2), torch.tensor([5, 3, 2, 1])).shape
        torch.Size([4, 3])
    """

    def __init__(
        self,
        num_classes: int | None = None,
        output_size: int | None = None,
        input_size: int | None = None,
        vocab_size: int | None = None,
        embedding_dim: int = 64,
        rnn: SpecLike = None,
        pooling: str = "last",
        pad_id: int = 0,
        input_noise: float = 0.0,
        frontend: dict[str, Any] | Literal[False] | None = None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        exactly_one(name, num_classes=num_classes, output_size=output_size)
        if pooling not in POOLINGS:
            raise ValueError(f"{name}: pooling must be one of {POOLINGS}, got {pooling!r}")
        self.num_classes, self.output_size, self.pooling = num_classes, output_size, pooling
        if frontend and input_size is None:
            raise ValueError(f"{name}: frontend needs float features (input_size), got vocab_size={vocab_size}")
        self.frontend = ConvFrontEnd(cast(int, input_size), **frontend) if frontend else None
        features = input_size if self.frontend is None else self.frontend.output_size
        self.encoder = SequenceEncoder(features, vocab_size, embedding_dim, rnn, pad_id, name, input_noise)
        width = self.encoder.output_size
        if pooling == "attention":
            self.query = nn.Parameter(torch.randn(width) / width**0.5)
            self.attention = AdditiveAttention(width, width)
        self.head = nn.Linear(width, cast(int, num_classes or output_size))

    def pool(self, outputs: Tensor, state: Tensor | tuple[Tensor, Tensor], lengths: Tensor | None) -> Tensor:
        """``(B, T, D*H)`` encoder outputs -> ``(B, D*H)`` summary."""
        if self.pooling == "last":
            return self.encoder.summary(state)
        B, T, _ = outputs.shape
        mask = None if lengths is None else length_mask(lengths.to(outputs.device), T)  # (B, T)
        if self.pooling == "mean":
            if mask is None:
                return outputs.mean(dim=1)
            assert lengths is not None  # mask is built from lengths
            return outputs.sum(dim=1) / lengths.to(outputs).unsqueeze(-1)  # padded outputs are zero
        if self.pooling == "max":
            if mask is None:
                return outputs.amax(dim=1)
            return outputs.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(dim=1)
        context, _ = self.attention(self.query.expand(B, -1), outputs, mask=mask)
        return context

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """``x`` ``(B, T)`` ids or ``(B, T, input_size)``, ``lengths`` ``(B,)`` -> ``(B, num_classes)`` / ``(B, O)``."""
        if self.frontend is not None:
            x, lengths = self.frontend(x, lengths)
        outputs, state = self.encoder(x, lengths)
        return self.head(self.pool(outputs, state, lengths))

    def init_state(self, batch_size: int) -> State:
        """Zero state for :meth:`step`."""
        return self.encoder.init_state(batch_size)

    def step(self, x_t: Tensor, state: State | None) -> tuple[Tensor, State]:
        """Streaming: ``x_t`` ``(B,)`` ids or ``(B, input_size)`` -> ``(prediction (B, C), state)``, the prediction
        of :meth:`forward` on the steps fed so far. Unidirectional encoders with ``pooling="last"`` only."""
        if self.pooling != "last":
            raise ValueError(f"{type(self).__name__}: step() needs pooling='last', got pooling={self.pooling!r}")
        _, state = self.encoder.step(x_t, state)
        return self.head(self.encoder.summary(state)), state
