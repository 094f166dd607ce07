"""One-to-many: generate a sequence from a condition (a class id or a feature vector).

The condition ``c`` (an embedded class id ``(B, C)`` or given features ``(B, C)``) reaches the decoder in
one or both of two ways, chosen by ``condition``:

- ``"init"``: a learned bridge maps ``c`` to the initial state ``h_0 = tanh(W c + b)`` (and ``c_0``);
- ``"input"``: ``c`` is concatenated to the input at every step;
- ``"both"`` (default).

Outputs are tokens (``vocab_size``: logits, sequences ``BOS ... EOS``) or real vectors (``output_size``:
an MSE head giving the mean, or a Gaussian head giving mean and variance).
"""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqforge.layers.spec import RecurrentSpec, SpecLike
from seqforge.models.common import StateBridge, check_token_ids, exactly_one
from seqforge.models.decoding import beam_search, check_stop, sample_decode, select_rows

CONDITIONING = ("init", "input", "both")
REAL_HEADS = ("mse", "gaussian")


class ConditionalGenerator(nn.Module):
    """Conditional autoregressive decoder.

    Args:
        vocab_size / output_size: token outputs or real-valued outputs of ``output_size`` features.
        num_conditions / cond_size: class-id condition (embedded to ``cond_embedding_dim``) or a float
            condition vector of ``cond_size`` features.
        output_head: ``"mse"`` or ``"gaussian"`` (real-valued outputs only).
        rnn: the decoder's :class:`~seqforge.layers.spec.RecurrentSpec` (or a mapping of its keys); one
            direction.

    ``forward(cond, y_in)`` (teacher forcing): ``y_in`` ``(B, T)`` ids starting with BOS, or ``(B, T, F)``
    floats starting with a zero frame. Returns logits ``(B, T, V)``, the mean ``(B, T, F)`` (MSE head), or
    ``(mean, variance)`` each ``(B, T, F)`` (Gaussian head).

    Streaming: ``state = init_state(batch_size, cond)``, then ``step(y_t, state)`` for each input step ``y_t``
    (``(B,)`` ids or ``(B, F)`` floats) gives that step's output of :meth:`forward` (``(B, V)``, ``(B, F)`` or
    ``(mean, variance)``) and the next state.
    """

    def __init__(
        self,
        vocab_size: int | None = None,
        output_size: int | None = None,
        num_conditions: int | None = None,
        cond_size: int | None = None,
        cond_embedding_dim: int = 32,
        embedding_dim: int = 64,
        rnn: SpecLike = None,
        condition: str = "both",
        output_head: str = "mse",
        pad_id: int = 0,
        bos_id: int = 1,
        eos_id: int = 2,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        exactly_one(name, vocab_size=vocab_size, output_size=output_size)
        exactly_one(name, num_conditions=num_conditions, cond_size=cond_size)
        if condition not in CONDITIONING:
            raise ValueError(f"{name}: condition must be one of {CONDITIONING}, got {condition!r}")
        if output_head not in REAL_HEADS:
            raise ValueError(f"{name}: output_head must be one of {REAL_HEADS}, got {output_head!r}")
        self.vocab_size, self.output_size, self.num_conditions, self.cond_size = (
            vocab_size, output_size, num_conditions, cond_size,
        )  # fmt: skip
        self.condition, self.output_head = condition, output_head
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id
        spec = RecurrentSpec.of(name, rnn)
        if spec.bidirectional:
            raise ValueError(f"{name}: rnn.bidirectional=True cannot generate (a decoder reads left to right); "
                             "set it to false")
        self.hidden_size, self.num_layers = spec.hidden_size, spec.num_layers
        self.cond_embedding = nn.Embedding(num_conditions, cond_embedding_dim) if num_conditions else None
        c_dim = cast(int, cond_embedding_dim if num_conditions else cond_size)
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=pad_id) if vocab_size else None
        step_in = cast(int, embedding_dim if vocab_size else output_size)
        decoder = spec.build(step_in + (c_dim if condition != "init" else 0), owner=name)
        self.bridge = StateBridge(c_dim, decoder) if condition != "input" else None  # registered before the decoder
        self.rnn = decoder
        self.dropout = nn.Dropout(spec.dropout)
        out = vocab_size if vocab_size else cast(int, output_size) * (2 if output_head == "gaussian" else 1)
        self.head = nn.Linear(spec.hidden_size, out)

    @property
    def is_token(self) -> bool:
        return self.vocab_size is not None

    def encode_condition(self, cond: Tensor) -> Tensor:
        """``cond`` ``(B,)`` class ids or ``(B, cond_size)`` floats -> ``(B, C)``."""
        name = type(self).__name__
        if self.cond_embedding is not None:
            if cond.dim() != 1:
                raise ValueError(f"{name}: cond must be (B,) class ids, got shape {tuple(cond.shape)}")
            assert self.num_conditions is not None  # the condition embedding exists only with num_conditions
            check_token_ids(name, "cond", cond, self.num_conditions)
            return self.cond_embedding(cond)
        if cond.dim() != 2 or cond.shape[1] != self.cond_size or not cond.is_floating_point():
            raise ValueError(f"{name}: cond must be float (B, {self.cond_size}), got {cond.dtype} {tuple(cond.shape)}")
        return cond

    def initial_state(self, c: Tensor) -> Any:
        """Decoder state (the cell's structure, ``(L, B, ...)`` per tensor) from the encoded condition ``(B, C)``."""
        if self.bridge is not None:
            return self.bridge(c)
        return self.rnn.init_state(c.shape[0], c.device, c.dtype)

    def _inputs(self, y_in: Tensor, c: Tensor) -> Tensor:  # (B[, T][, F]) -> (B[, T], step_in [+ C])
        if self.is_token:
            assert self.embedding is not None  # token outputs always have the embedding
            x = self.dropout(self.embedding(y_in))
        else:
            x = y_in
        if self.condition != "init":
            c = c if x.dim() == 2 else c.unsqueeze(1).expand(-1, x.shape[1], -1)
            x = torch.cat([x, c], dim=-1)
        return x

    def _check_targets(self, y: Tensor, time: bool, batch: int, what: str) -> None:
        """``y``: ``(B, T)`` token ids or ``(B, T, F)`` floats (without ``T`` unless ``time``), ``B = batch``."""
        name, steps = type(self).__name__, "T, " if time else ""
        if self.is_token:
            if y.dim() != 1 + time:
                shape = "(B, T)" if time else "(B,)"
                raise ValueError(f"{name}: {what} must be {shape} token ids, got shape {tuple(y.shape)}")
            assert self.vocab_size is not None  # is_token
            check_token_ids(name, what, y, self.vocab_size)
        elif y.dim() != 2 + time or y.shape[-1] != self.output_size:
            raise ValueError(f"{name}: {what} must be (B, {steps}{self.output_size}) floats, got {tuple(y.shape)}")
        if y.shape[0] != batch:
            raise ValueError(f"{name}: cond has batch {batch} but {what} has batch {y.shape[0]}")

    def _head(self, out: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        y = self.head(self.dropout(out))
        if self.is_token or self.output_head == "mse":
            return y
        mean, raw = y.chunk(2, dim=-1)
        return mean, F.softplus(raw) + 1e-6

    def forward(self, cond: Tensor, y_in: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        self._check_targets(y_in, True, cond.shape[0], "y_in")
        c = self.encode_condition(cond)
        out, _ = self.rnn(self._inputs(y_in, c), self.initial_state(c))  # (B, T, H)
        return self._head(out)

    # --- streaming and decoding -----------------------------------------------------------------------------
    def init_state(self, batch_size: int, cond: Tensor) -> dict[str, Any]:
        """The state before the first step for ``cond`` (``(B,)`` class ids or ``(B, cond_size)``, ``B =
        batch_size``): ``{"cond": (B, C) encoded condition, "hidden": the decoder's state}``."""
        if cond.shape[:1] != (batch_size,):
            raise ValueError(f"{type(self).__name__}: cond must have batch_size={batch_size} rows, "
                             f"got shape {tuple(cond.shape)}")  # fmt: skip
        c = self.encode_condition(cond)
        return {"cond": c, "hidden": self.initial_state(c)}

    def step(self, y_t: Tensor, state: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """Streaming: the input step ``y_t`` (``(B,)`` ids or ``(B, F)`` floats) -> (this step's output of
        :meth:`forward`, the next state), from :meth:`init_state`'s state."""
        self._check_targets(y_t, False, state["cond"].shape[0], "y_t")
        return self.decode_step(y_t, state)

    def decode_step(self, previous: Tensor, state: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """``previous`` ``(B,)`` ids or ``(B, F)`` values (checked by the caller) -> (head output, state)."""
        out, hidden = self.rnn.step(self._inputs(previous, state["cond"]), state["hidden"])  # (B, H)
        return self._head(out), {"cond": state["cond"], "hidden": hidden}

    @staticmethod
    def reorder_state(state: dict[str, Any], index: Tensor) -> dict[str, Any]:
        return {"cond": state["cond"].index_select(0, index), "hidden": select_rows(state["hidden"], index, 1)}

    @torch.no_grad()
    def generate(
        self,
        cond: Tensor,
        max_len: int | None = None,
        strategy: str = "greedy",
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        beam_size: int = 1,
        length_penalty: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Generate from ``cond``.

        Tokens: ``strategy`` ``"greedy"`` or ``"sample"`` (``temperature``, ``top_k``, ``top_p``), or beam
        search when ``beam_size > 1``; returns ``(tokens (B, L), lengths (B,))`` (EOS included, then pad).
        Real values: ``"greedy"`` feeds back the mean, ``"sample"`` draws from the Gaussian head; returns
        ``(values (B, max_len, F), lengths (B,))`` (all ``max_len``: real outputs have no end token).
        """
        B = cond.shape[0]
        state = self.init_state(B, cond)
        c = state["cond"]
        if self.is_token:
            start = torch.full((B,), self.bos_id, dtype=torch.long, device=c.device)
            if beam_size > 1:
                tokens, lengths, _ = beam_search(
                    self.decode_step, self.reorder_state, state, start, beam_size, max_len, self.eos_id,
                    self.pad_id, length_penalty,
                )  # fmt: skip
                return tokens[:, 0], lengths[:, 0]
            return sample_decode(
                self.decode_step, state, start, max_len, self.eos_id, self.pad_id, strategy, temperature, top_k,
                top_p, generator,
            )  # fmt: skip
        name = type(self).__name__
        max_len = check_stop(name, None, max_len)
        if beam_size != 1:
            raise ValueError(f"{name}: beam search needs token outputs (vocab_size), got beam_size={beam_size}")
        if strategy not in ("greedy", "sample") or (strategy == "sample" and self.output_head != "gaussian"):
            raise ValueError(
                f"{name}: real-valued outputs decode with strategy 'greedy', or 'sample' with output_head="
                f"'gaussian'; got strategy={strategy!r} with output_head={self.output_head!r}"
            )
        assert self.output_size is not None  # exactly_one: real-valued outputs have output_size
        value, values = c.new_zeros(B, self.output_size), []
        for _ in range(max_len):
            y, state = self.decode_step(value, state)
            if isinstance(y, tuple):
                mean, var = y
                noise = torch.randn(mean.shape, generator=generator, device=mean.device)
                y = mean + var.sqrt() * noise if strategy == "sample" else mean
            value = y
            values.append(y)
        return torch.stack(values, 1), torch.full((B,), max_len, dtype=torch.long, device=c.device)
