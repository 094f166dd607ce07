"""Many-to-many, same length: one label per input step (part-of-speech tagging, frame labelling)."""

from __future__ import annotations

from torch import Tensor, nn

from seqforge.cells.base import State
from seqforge.layers.crf import CRF
from seqforge.layers.spec import RecurrentSpec, SpecLike
from seqforge.models.common import SequenceEncoder


class SequenceTagger(nn.Module):
    """Recurrent encoder (``rnn``, a :class:`~seqforge.layers.spec.RecurrentSpec`, bidirectional unless it
    says ``bidirectional: false``) and a per-step linear head.

    ``forward(x, lengths)`` with ``x`` ``(B, T)`` token ids (``vocab_size``) or ``(B, T, input_size)``
    floats returns logits ``(B, T, num_classes)``; the logits of padded steps are the head's bias (the
    encoder output is zero there) and must be ignored by the loss (labels ``-100``).

    With ``crf=True`` the logits are the emissions of a linear-chain :class:`~seqforge.layers.crf.CRF`
    (``self.crf``), which :class:`~seqforge.tasks.TaggingTask` trains by its negative log-likelihood and
    decodes with Viterbi.

    Example::

        >>> import torch
        >>> from seqforge.models import SequenceTagger
        >>> net = SequenceTagger(num_classes=5, vocab_size=10, rnn={"hidden_size": 8})
        >>> net(torch.randint(1, 10, (2, 6)), torch.tensor([6, 4])).shape
        torch.Size([2, 6, 5])
    """

    def __init__(
        self,
        num_classes: int,
        input_size: int | None = None,
        vocab_size: int | None = None,
        embedding_dim: int = 64,
        rnn: SpecLike = None,
        pad_id: int = 0,
        crf: bool = False,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        name = type(self).__name__
        spec = RecurrentSpec.of(name, rnn, bidirectional=True)
        self.encoder = SequenceEncoder(input_size, vocab_size, embedding_dim, spec, pad_id, owner=name)
        self.head = nn.Linear(self.encoder.output_size, num_classes)
        self.crf = CRF(num_classes) if crf else None

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        outputs, _ = self.encoder(x, lengths)  # (B, T, D*H)
        return self.head(outputs)

    def init_state(self, batch_size: int) -> State:
        """Zero state for :meth:`step`."""
        return self.encoder.init_state(batch_size)

    def step(self, x_t: Tensor, state: State | None) -> tuple[Tensor, State]:
        """Streaming: ``x_t`` ``(B,)`` ids or ``(B, input_size)`` -> ``(logits (B, num_classes), state)`` of this
        step, as :meth:`forward`. Unidirectional encoders only."""
        out, state = self.encoder.step(x_t, state)
        return self.head(out), state
