"""Recurrent language model: embedding -> recurrent stack -> (projection) -> tied output layer."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from seqforge.layers.spec import RecurrentSpec, SpecLike
from seqforge.models.common import check_token_ids
from seqforge.models.decoding import beam_search, sample_decode, select_rows


class LanguageModel(nn.Module):
    """Next-token model over ``vocab_size`` tokens with optional weight tying (Press & Wolf 2017).

    With ``tie_weights`` the output layer shares the embedding matrix; when ``hidden_size`` differs from
    ``embedding_dim`` a linear projection maps the recurrent output to ``embedding_dim`` first. ``rnn`` is the
    :class:`~seqforge.layers.spec.RecurrentSpec` of the stack (or a mapping of its keys); one direction.

    ``forward(x, state=None)``: ``x`` ``(B, T)`` ids -> ``(logits (B, T, V), state)``; pass the returned
    state (detached) with the next window to carry context across batches (truncated BPTT).

    Example::

        >>> import torch
        >>> from seqforge.models import LanguageModel
        >>> lm = LanguageModel(vocab_size=20, embedding_dim=8, rnn={"hidden_size": 16})
        >>> logits, state = lm(torch.randint(0, 20, (2, 7)))
        >>> lm.generate(torch.randint(4, 20, (2, 3)), max_new_tokens=5, strategy="sample", top_k=5)[0].shape
        torch.Size([2, 5])
    """

    def __init__(
        self,
        vocab_size: int,
        embedding_dim: int = 64,
        rnn: SpecLike = None,
        tie_weights: bool = True,
        pad_id: int = 0,
        eos_id: int | None = None,
    ) -> None:
        super().__init__()
        self.vocab_size, self.pad_id, self.eos_id = vocab_size, pad_id, eos_id
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        name = type(self).__name__
        spec = RecurrentSpec.of(name, rnn)
        if spec.bidirectional:
            raise ValueError(f"{name}: rnn.bidirectional=True cannot predict the next token (it would read it); "
                             "set it to false")
        hidden_size = spec.hidden_size
        self.rnn = spec.build(embedding_dim, owner=name)
        self.dropout = nn.Dropout(spec.dropout)
        out_dim = embedding_dim if tie_weights else hidden_size
        self.proj = nn.Linear(hidden_size, out_dim) if out_dim != hidden_size else nn.Identity()
        self.decoder = nn.Linear(out_dim, vocab_size)
        if tie_weights:
            self.decoder.weight = self.embedding.weight

    def forward(self, x: Tensor, state: Any = None) -> tuple[Tensor, Any]:
        name = type(self).__name__
        if x.dim() != 2:
            raise ValueError(f"{name}: x must be (B, T) token ids, got shape {tuple(x.shape)}")
        check_token_ids(name, "x", x, self.vocab_size)
        return self._run(x, state)

    def _run(self, x: Tensor, state: Any) -> tuple[Tensor, Any]:
        out, state = self.rnn(self.dropout(self.embedding(x)), state)  # (B, T, H)
        return self.decoder(self.proj(self.dropout(out))), state

    def _step(self, tokens: Tensor, state: Any) -> tuple[Tensor, Any]:  # decoding: ids already checked
        out, state = self.rnn.step(self.dropout(self.embedding(tokens)), state)  # (B, H)
        return self.decoder(self.proj(self.dropout(out))), state

    def init_state(self, batch_size: int) -> Any:
        """Zero state for :meth:`step`."""
        ref = self.embedding.weight
        return self.rnn.init_state(batch_size, device=ref.device, dtype=ref.dtype)

    def step(self, x_t: Tensor, state: Any) -> tuple[Tensor, Any]:
        """Streaming: token ids ``x_t`` ``(B,)`` -> ``(next-token logits (B, V), state)``, as :meth:`forward`."""
        if x_t.dim() != 1:
            raise ValueError(f"{type(self).__name__}: x_t must be (B,) token ids, got shape {tuple(x_t.shape)}")
        check_token_ids(type(self).__name__, "x_t", x_t, self.vocab_size)
        return self._step(x_t, state)

    @staticmethod
    def _reorder(state: Any, index: Tensor) -> Any:
        return select_rows(state, index, dim=1)

    @torch.no_grad()
    def generate(
        self,
        prompt: Tensor,
        max_new_tokens: int | None = None,
        strategy: str = "greedy",
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        beam_size: int = 1,
        length_penalty: float = 0.0,
        eos_id: int | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Continue ``prompt`` ``(B, P)`` (``P >= 1``) -> ``(new tokens (B, L), lengths (B,))``.

        Stops at ``eos_id`` (default: the model's ``eos_id``) or after ``max_new_tokens``; at least one of
        the two is required. Samplers and beam search as in :mod:`seqforge.models.decoding`.
        """
        eos_id = self.eos_id if eos_id is None else eos_id
        if prompt.dim() != 2 or prompt.shape[1] < 1:
            raise ValueError(f"{type(self).__name__}: prompt must be (B, P) with P >= 1, got {tuple(prompt.shape)}")
        check_token_ids(type(self).__name__, "prompt", prompt, self.vocab_size)
        state = self.forward(prompt[:, :-1])[1] if prompt.shape[1] > 1 else None  # None: zero initial state
        start = prompt[:, -1]
        if beam_size > 1:
            tokens, lengths, _ = beam_search(
                self._step, self._reorder, state, start, beam_size, max_new_tokens, eos_id, self.pad_id,
                length_penalty,
            )  # fmt: skip
            return tokens[:, 0], lengths[:, 0]
        return sample_decode(
            self._step, state, start, max_new_tokens, eos_id, self.pad_id, strategy, temperature, top_k, top_p,
            generator,
        )  # fmt: skip
