"""Attention over a padded memory with key masks: additive (Bahdanau), dot and general (Luong), multi-head.

Every module has the same call::

    context, weights = attn(query, keys, values=None, mask=None)

- ``query``: ``(B, Hq)`` for one decoder step or ``(B, Tq, Hq)`` for several;
- ``keys``: ``(B, S, Hk)``; ``values``: ``(B, S, Hv)`` (defaults to ``keys``);
- ``mask``: ``(B, S)`` bool, ``True`` on valid (non-padding) positions, or ``None`` for no padding;
- ``context``: ``(B, Hv)`` or ``(B, Tq, Hv)``; ``weights``: ``(B, S)`` or ``(B, Tq, S)``.

Weights sum to one over the valid positions of each row and are exactly zero on padding. A row with no
valid position gets all-zero weights and a zero context (never NaN).

A decoder attends to the same memory at every step, so the memory-side projections (``W_k k`` of the
additive and general scores, the key and value projections of multi-head attention) can be computed
once: ``keys, values = attn.project_memory(keys, values)`` and then ``attn(query, keys, values, mask,
projected=True)`` at each step gives the same result as the plain call.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from seqforge.layers.masks import length_mask as length_mask  # re-exported: callers import it from here

ATTENTION_KINDS = ("additive", "dot", "general", "multihead")


def masked_softmax(scores: Tensor, mask: Tensor | None) -> Tensor:
    """Softmax over the last dim of ``scores (..., S)`` with ``mask (B, S)`` broadcast over middle dims."""
    if mask is None:
        return torch.softmax(scores, dim=-1)
    mask = mask.view(mask.shape[0], *([1] * (scores.dim() - 2)), mask.shape[-1])
    weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
    return weights.masked_fill(~mask, 0.0)  # rows without any valid key: NaN -> 0


class Attention(nn.Module):
    """Base of the attention modules: input checks and the single-step ``(B, Hq)`` query convenience.

    Subclasses define ``score(q (B, Tq, Hq), k (B, S, Hk')) -> (B, Tq, S)`` on projected keys (or override
    ``_attend``), and ``project_memory`` when they project keys or values.
    """

    def project_memory(self, keys: Tensor, values: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The memory-side projections, ``(keys', values')``, to compute once and pass with ``projected=True``."""
        return keys, keys if values is None else values

    def forward(
        self,
        query: Tensor,
        keys: Tensor,
        values: Tensor | None = None,
        mask: Tensor | None = None,
        projected: bool = False,
    ) -> tuple[Tensor, Tensor]:
        """``projected=True``: ``keys``/``values`` come from :meth:`project_memory` (cached by the caller)."""
        name = type(self).__name__
        values = keys if values is None else values
        if keys.dim() != 3 or values.dim() != 3 or values.shape[:2] != keys.shape[:2]:
            raise ValueError(
                f"{name}: keys and values must be (B, S, H) with the same B and S, got keys "
                f"{tuple(keys.shape)} and values {tuple(values.shape)}"
            )
        if query.dim() not in (2, 3) or query.shape[0] != keys.shape[0]:
            raise ValueError(
                f"{name}: query must be (B, Hq) or (B, Tq, Hq) with B={keys.shape[0]}, got {tuple(query.shape)}"
            )
        if mask is not None and (mask.shape != keys.shape[:2] or mask.dtype != torch.bool):
            raise ValueError(
                f"{name}: mask must be a bool tensor of shape {tuple(keys.shape[:2])} (True = valid), got "
                f"{mask.dtype} {tuple(mask.shape)}"
            )
        single = query.dim() == 2
        q = query.unsqueeze(1) if single else query  # (B, Tq, Hq)
        if not projected:
            keys, values = self.project_memory(keys, values)
        context, weights = self._attend(q, keys, values, mask)
        return (context.squeeze(1), weights.squeeze(1)) if single else (context, weights)

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        weights = masked_softmax(self.score(q, k), mask)  # (B, Tq, S)
        return weights @ v, weights

    def score(self, q: Tensor, k: Tensor) -> Tensor:  # (B, Tq, Hq), (B, S, Hk) -> (B, Tq, S)
        raise NotImplementedError


class AdditiveAttention(Attention):
    """Bahdanau attention: ``score(q, k) = v^T tanh(W_q q + W_k k)``.

    Args:
        query_size: ``Hq``. key_size: ``Hk``. attention_size: width of the hidden layer (default ``Hk``).
    """

    def __init__(self, query_size: int, key_size: int, attention_size: int | None = None) -> None:
        super().__init__()
        attention_size = attention_size or key_size
        self.query_proj = nn.Linear(query_size, attention_size, bias=False)
        self.key_proj = nn.Linear(key_size, attention_size)
        self.v = nn.Linear(attention_size, 1, bias=False)

    def project_memory(self, keys: Tensor, values: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.key_proj(keys), keys if values is None else values  # keys' (B, S, A)

    def score(self, q: Tensor, k: Tensor) -> Tensor:
        hidden = torch.tanh(self.query_proj(q).unsqueeze(2) + k.unsqueeze(1))  # (B, Tq, S, A)
        return self.v(hidden).squeeze(-1)


class DotAttention(Attention):
    """Luong dot attention: ``score(q, k) = q . k`` (divided by ``sqrt(H)`` when ``scaled``); needs ``Hq == Hk``."""

    def __init__(self, query_size: int, key_size: int, scaled: bool = False) -> None:
        super().__init__()
        if query_size != key_size:
            raise ValueError(
                f"DotAttention: query_size and key_size must be equal, got {query_size} and {key_size}; "
                "use GeneralAttention for different sizes"
            )
        self.scale = 1.0 / math.sqrt(key_size) if scaled else 1.0

    def score(self, q: Tensor, k: Tensor) -> Tensor:
        return (q @ k.transpose(1, 2)) * self.scale


class GeneralAttention(Attention):
    """Luong general attention: ``score(q, k) = q^T W k``."""

    def __init__(self, query_size: int, key_size: int) -> None:
        super().__init__()
        self.weight = nn.Linear(key_size, query_size, bias=False)

    def project_memory(self, keys: Tensor, values: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.weight(keys), keys if values is None else values  # keys' (B, S, Hq)

    def score(self, q: Tensor, k: Tensor) -> Tensor:
        return q @ k.transpose(1, 2)


class MultiHeadAttention(Attention):
    """Scaled dot-product attention with ``num_heads`` heads and learned projections.

    The context is the output projection of the concatenated heads, of size ``output_size`` (default
    ``query_size``); the returned weights are the mean over heads, so they still sum to one.
    """

    def __init__(
        self, query_size: int, key_size: int, num_heads: int = 4, output_size: int | None = None
    ) -> None:
        super().__init__()
        if num_heads < 1 or query_size % num_heads:
            raise ValueError(
                f"MultiHeadAttention: query_size ({query_size}) must be a positive multiple of num_heads "
                f"({num_heads})"
            )
        self.num_heads = num_heads
        self.q_proj = nn.Linear(query_size, query_size)
        self.k_proj = nn.Linear(key_size, query_size)
        self.v_proj = nn.Linear(key_size, query_size)
        self.out_proj = nn.Linear(query_size, output_size or query_size)

    def project_memory(self, keys: Tensor, values: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.k_proj(keys), self.v_proj(keys if values is None else values)  # both (B, S, Hq)

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        B, Tq, H = q.shape
        heads, d = self.num_heads, H // self.num_heads

        def split(x: Tensor) -> Tensor:  # (B, L, H) -> (B, heads, L, d)
            return x.view(B, -1, heads, d).transpose(1, 2)

        qh, kh, vh = split(self.q_proj(q)), split(k), split(v)
        scores = qh @ kh.transpose(-1, -2) / math.sqrt(d)  # (B, heads, Tq, S)
        weights = masked_softmax(scores, mask)
        context = (weights @ vh).transpose(1, 2).reshape(B, Tq, H)
        return self.out_proj(context), weights.mean(dim=1)


def make_attention(kind: str, query_size: int, key_size: int, num_heads: int = 4) -> Attention:
    """Build the attention module named ``kind`` (one of :data:`ATTENTION_KINDS`)."""
    if kind == "additive":
        return AdditiveAttention(query_size, key_size)
    if kind == "dot":
        return DotAttention(query_size, key_size)
    if kind == "general":
        return GeneralAttention(query_size, key_size)
    if kind == "multihead":
        return MultiHeadAttention(query_size, key_size, num_heads=num_heads)
    raise ValueError(f"make_attention: kind must be one of {ATTENTION_KINDS}, got {kind!r}")
