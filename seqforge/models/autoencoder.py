"""Recurrent autoencoder: encode a window into one vector, decode the window back from it.

The encoder's summary (the top layer's final hidden state, both directions when bidirectional) is the only
path from input to output: the decoder reads that summary at every step (no teacher forcing, so it cannot
copy its input) and a linear head maps each decoder output to the input features. Trained on normal
windows, its reconstruction error is an anomaly score (Malhotra et al. 2016, "LSTM-based encoder-decoder for
multi-sensor anomaly detection", reconstructing forward in time here).

``window_norm="mean"`` removes each window's mean over its valid steps (every feature) before encoding and
adds it back to the reconstruction, so a series whose level drifts (a trend) is judged on its shape.
"""

from __future__ import annotations

from torch import Tensor, nn

from seqforge.layers.masks import length_mask
from seqforge.layers.spec import RecurrentSpec, SpecLike
from seqforge.models.common import SequenceEncoder

WINDOW_NORMS = ("none", "mean")


class RecurrentAutoencoder(nn.Module):
    """``forward(x, lengths=None)``: ``x`` ``(B, T, input_size)`` -> reconstruction ``(B, T, input_size)``,
    zero past each sequence's length.

    ``rnn``: one :class:`~seqforge.layers.spec.RecurrentSpec` (or a mapping of its keys) for the encoder and
    the decoder; ``bidirectional`` is the encoder's (the decoder runs forward).

    Example::

        >>> import torch
        >>> from seqforge.models import RecurrentAutoencoder
        >>> net = RecurrentAutoencoder(input_size=2, rnn={"hidden_size": 8})
        >>> net(torch.randn(3, 10, 2)).shape
        torch.Size([3, 10, 2])
    """

    def __init__(self, input_size: int = 1, rnn: SpecLike = None, window_norm: str = "none") -> None:
        super().__init__()
        name = type(self).__name__
        if window_norm not in WINDOW_NORMS:
            raise ValueError(f"{name}: window_norm must be one of {WINDOW_NORMS}, got {window_norm!r}")
        self.window_norm = window_norm
        spec = RecurrentSpec.of(name, rnn, hidden_size=64)
        self.encoder = SequenceEncoder(input_size=input_size, rnn=spec, owner=name)
        self.decoder = spec.build(self.encoder.output_size, bidirectional=False, owner=name)
        self.head = nn.Linear(spec.hidden_size, input_size)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        valid = None if lengths is None else length_mask(lengths.to(x.device), x.shape[1]).unsqueeze(-1)  # (B, T, 1)
        level = x.new_zeros(x.shape[0], 1, x.shape[2])  # (B, 1, I)
        if self.window_norm == "mean":
            weights = x.new_ones(x.shape[0], x.shape[1], 1) if valid is None else valid.to(x.dtype)  # (B, T, 1)
            level = (x * weights).sum(1, keepdim=True) / weights.sum(1, keepdim=True)
            x = x - level
        _, state = self.encoder(x, lengths)
        summary = self.encoder.summary(state)  # (B, D*H)
        steps = summary.unsqueeze(1).expand(-1, x.shape[1], -1)  # (B, T, D*H): the summary at every step
        out, _ = self.decoder(steps, lengths=lengths)  # (B, T, H)
        recon = self.head(out) + level  # (B, T, input_size)
        return recon if valid is None else recon * valid.to(recon.dtype)
