"""Pieces every model file uses: the input-check helpers, the recurrent encoder and the state bridge."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from seqforge.cells.base import State, as_state, state_tensors
from seqforge.layers.masks import check_length_range
from seqforge.layers.recurrent import Recurrent
from seqforge.layers.spec import RecurrentSpec, SpecLike


def exactly_one(owner: str, **options: Any) -> str:
    """Name of the one option that is not ``None``; a clear error when none or several are given."""
    given = [name for name, value in options.items() if value is not None]
    if len(given) != 1:
        names = " or ".join(options)
        raise ValueError(f"{owner}: pass exactly one of {names}, got {given or 'none'}")
    return given[0]


def check_lengths(owner: str, lengths: Tensor | None, batch: int, steps: int) -> None:
    """``lengths`` must be an integer ``(batch,)`` tensor with values in ``[1, steps]`` (or ``None``)."""
    if lengths is None:
        return
    if not isinstance(lengths, Tensor) or lengths.is_floating_point() or lengths.shape != (batch,):
        got = tuple(lengths.shape) if isinstance(lengths, Tensor) else type(lengths).__name__
        raise ValueError(f"{owner}: lengths must be an integer tensor of shape ({batch},), got {got}")
    check_length_range(owner, lengths, steps)


def check_token_ids(owner: str, name: str, ids: Tensor, vocab_size: int) -> None:
    """``ids`` must be int64 with every id in ``[0, vocab_size)``."""
    if ids.dtype != torch.long:
        raise TypeError(f"{owner}: {name} must be int64 token ids, got {ids.dtype}")
    if torch.compiler.is_exporting():  # values unknown while tracing: checked when the program runs
        torch._assert_async(((ids >= 0) & (ids < vocab_size)).all(),
                            f"{owner}: {name} ids must lie in [0, {vocab_size})")  # fmt: skip
        return
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
        raise ValueError(
            f"{owner}: {name} ids must lie in [0, {vocab_size}) (vocab_size={vocab_size}), got min "
            f"{int(ids.min())}, max {int(ids.max())}; does the data's vocabulary match the model's?"
        )


def last_layer_state(h_n: Tensor, num_layers: int, bidirectional: bool) -> Tensor:
    """The top layer's final hidden state, directions concatenated: ``(L*D, B, H)`` -> ``(B, D*H)``."""
    D = 2 if bidirectional else 1
    top = h_n.view(num_layers, D, h_n.shape[-2], h_n.shape[-1])[-1]  # (D, B, H)
    return top.transpose(0, 1).reshape(h_n.shape[-2], D * h_n.shape[-1])


def sequence_masks(decoder: nn.Module, batch_size: int) -> list[Tensor] | None:
    """The decoder's recurrent-dropout masks for ``batch_size`` sequences, drawn once (see
    :meth:`Recurrent.recurrent_masks`); ``None`` outside training (and for layers without them, e.g. int8)."""
    draw = getattr(decoder, "recurrent_masks", None)
    return draw(batch_size) if decoder.training and draw is not None else None


def decoder_step(decoder: nn.Module, x_t: Tensor, state: State, masks: list[Tensor] | None) -> tuple[Tensor, State]:
    """``decoder.step(x_t, state)``, with the sequence's ``masks`` from :func:`sequence_masks` when there are any."""
    step: Any = decoder.step
    return step(x_t, state) if masks is None else step(x_t, state, masks)


class SequenceEncoder(nn.Module):
    """Token embedding (``vocab_size``) or float features (``input_size``), then a recurrent stack.

    ``forward(x, lengths)`` with ``x`` ``(B, T)`` int64 ids or ``(B, T, input_size)`` floats returns
    ``(outputs, state)``: ``outputs`` ``(B, T, D*H)`` zero on padding, ``state`` as the recurrent layer's
    ``h_n`` (or ``(h_n, c_n)``), ``(num_layers*D, B, H)``. ``output_size`` is ``D*H``. ``rnn`` is the
    :class:`~seqforge.layers.spec.RecurrentSpec` of the stack (its ``dropout`` also acts on the embeddings and
    the outputs). ``input_noise`` is the standard deviation of Gaussian noise added to float features in
    training mode only (a regularizer for small real-valued datasets; features are assumed standardized).
    """

    def __init__(
        self,
        input_size: int | None = None,
        vocab_size: int | None = None,
        embedding_dim: int = 64,
        rnn: SpecLike = None,
        pad_id: int = 0,
        owner: str = "SequenceEncoder",
        input_noise: float = 0.0,
    ) -> None:
        super().__init__()
        self.owner = owner
        exactly_one(owner, input_size=input_size, vocab_size=vocab_size)
        if not input_noise >= 0.0:
            raise ValueError(f"{owner}: input_noise must be a standard deviation >= 0, got {input_noise!r}")
        if input_noise and vocab_size is not None:
            raise ValueError(f"{owner}: input_noise={input_noise} needs float features (input_size), not token ids")
        spec = RecurrentSpec.of(owner, rnn)
        self.input_noise = float(input_noise)
        self.vocab_size = vocab_size
        self.input_size = input_size
        self.embedding = None if vocab_size is None else nn.Embedding(vocab_size, embedding_dim, padding_idx=pad_id)
        self.num_layers, self.bidirectional = spec.num_layers, spec.bidirectional
        step_size = embedding_dim if vocab_size is not None else input_size
        assert step_size is not None  # exactly_one: input_size is given when vocab_size is not
        self.rnn = spec.build(step_size, owner=owner)
        self.dropout = nn.Dropout(spec.dropout)
        self.output_size = spec.hidden_size * spec.num_directions

    def check_input(self, x: Tensor, lengths: Tensor | None) -> None:
        """Raise a clear error when ``x``/``lengths`` do not fit this encoder."""
        if self.embedding is not None:
            if x.dim() != 2:
                raise ValueError(f"{self.owner}: expected token ids (B, T), got shape {tuple(x.shape)}")
            assert self.vocab_size is not None  # the embedding exists only with a vocab_size
            check_token_ids(self.owner, "x", x, self.vocab_size)
        elif x.dim() != 3 or x.shape[-1] != self.input_size or not x.is_floating_point():
            raise ValueError(
                f"{self.owner}: expected float features (B, T, {self.input_size}), got {x.dtype} {tuple(x.shape)}"
            )
        check_lengths(self.owner, lengths, x.shape[0], x.shape[1])

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, State]:
        self.check_input(x, lengths)
        if self.embedding is not None:
            inputs = self.dropout(self.embedding(x))
        elif self.training and self.input_noise:
            inputs = x + self.input_noise * torch.randn_like(x)
        else:
            inputs = x
        outputs, state = self.rnn(inputs, lengths=lengths)
        return self.dropout(outputs), state

    def init_state(self, batch_size: int) -> State:
        """Zero state for :meth:`step`, shaped as the recurrent layer's ``h_n`` (or ``(h_n, c_n)``)."""
        ref = next(self.rnn.parameters())
        return self.rnn.init_state(batch_size, device=ref.device, dtype=ref.dtype)

    def step(self, x_t: Tensor, state: State | None) -> tuple[Tensor, State]:
        """One time step (streaming): ``x_t`` ``(B,)`` ids or ``(B, input_size)`` -> ``(output (B, H), state)``,
        the same as :meth:`forward` over the steps fed so far. Unidirectional encoders only."""
        if self.bidirectional:
            raise ValueError(f"{self.owner}: step() streams one direction; this model is bidirectional "
                             "(bidirectional=True reads the future): train it with bidirectional=false "
                             "(model.net.rnn.bidirectional=false)")
        self.check_input(x_t.unsqueeze(1), None)
        inputs = self.dropout(self.embedding(x_t)) if self.embedding is not None else x_t
        out, state = self.rnn.step(inputs, state)
        return self.dropout(out), state

    def summary(self, state: State) -> Tensor:
        """``(B, D*H)``: the top layer's final hidden state (both directions) from the ``state`` it returned."""
        h_n = state[0] if isinstance(state, tuple) else state
        return last_layer_state(h_n, self.num_layers, self.bidirectional)


class StateBridge(nn.Module):
    """Map a ``(B, in_size)`` summary to the initial state of ``decoder`` (any cell), shaped as its
    ``init_state``: ``(num_layers, B, ...)`` per state tensor (``h``, or ``(h, c)`` for an LSTM).

    The first state tensor (``h`` by convention) is ``tanh(W_h s + b_h)``, the others ``W_k s + b_k``
    (``to_c`` for the second, ``to_more`` for any further ones), one linear map for all layers each.
    """

    def __init__(self, in_size: int, decoder: Recurrent) -> None:
        super().__init__()
        zeros = state_tensors(decoder.init_state(1))  # (L, 1, ...) per state tensor
        self.shapes = [z.shape[:1] + z.shape[2:] for z in zeros]  # (L, ...)
        self.is_tensor = decoder.state_is_tensor
        sizes = [s.numel() for s in self.shapes]
        self.to_h = nn.Linear(in_size, sizes[0])
        self.to_c = nn.Linear(in_size, sizes[1]) if len(sizes) > 1 else None
        self.to_more = nn.ModuleList(nn.Linear(in_size, n) for n in sizes[2:])

    def forward(self, summary: Tensor) -> State:
        maps = [self.to_h, *([self.to_c] if self.to_c is not None else []), *self.to_more]
        parts = []
        for k, (linear, shape) in enumerate(zip(maps, self.shapes)):
            flat = linear(summary)  # (B, L * ...)
            flat = torch.tanh(flat) if k == 0 else flat
            parts.append(flat.view(-1, *shape).transpose(0, 1).contiguous())  # (L, B, ...)
        return as_state(parts, self.is_tensor)
