"""Linear-chain conditional random field: batched log-likelihood (forward algorithm) and Viterbi decoding."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class CRF(nn.Module):
    """A linear-chain CRF over ``num_tags`` tags with start, end and transition scores.

    The score of tags ``y_0..y_{L-1}`` for emissions ``e`` (a sequence of length ``L``) is
    ``start[y_0] + sum_t e[t, y_t] + sum_{t>0} transitions[y_{t-1}, y_t] + end[y_{L-1}]``. Steps at or past
    each sequence's length are ignored. Parameters start at zero (the CRF then equals per-step softmax).

    Shape:
        emissions ``(B, T, num_tags)``, tags ``(B, T)`` int64 (any value on padded steps), lengths ``(B,)``
        with every length in ``[1, T]`` (``None``: all ``T``).
    """

    def __init__(self, num_tags: int) -> None:
        super().__init__()
        if isinstance(num_tags, bool) or not isinstance(num_tags, int) or num_tags < 1:
            raise ValueError(f"CRF: num_tags must be a positive int, got {num_tags!r}")
        self.num_tags = num_tags
        self.start = nn.Parameter(torch.zeros(num_tags))
        self.end = nn.Parameter(torch.zeros(num_tags))
        self.transitions = nn.Parameter(torch.zeros(num_tags, num_tags))  # [from, to]

    def _mask(self, emissions: Tensor, lengths: Tensor | None) -> Tensor:
        B, T, C = emissions.shape
        if C != self.num_tags:
            raise ValueError(f"CRF: emissions have {C} tags in the last dimension, expected {self.num_tags}")
        if lengths is None:
            return torch.ones(B, T, dtype=torch.bool, device=emissions.device)
        lengths = lengths.to(emissions.device)
        if lengths.shape != (B,) or int(lengths.min()) < 1 or int(lengths.max()) > T:
            raise ValueError(f"CRF: lengths must be ({B},) in [1, {T}], got {lengths.tolist()}")
        return torch.arange(T, device=emissions.device) < lengths.unsqueeze(1)  # (B, T)

    def log_partition(self, emissions: Tensor, lengths: Tensor | None = None) -> Tensor:
        """``(B,)`` log of the sum of ``exp(score)`` over every tag sequence (the forward algorithm)."""
        mask = self._mask(emissions, lengths)
        alpha = self.start + emissions[:, 0]  # (B, C)
        for t in range(1, emissions.shape[1]):
            step = torch.logsumexp(alpha.unsqueeze(2) + self.transitions, dim=1) + emissions[:, t]  # (B, C)
            alpha = torch.where(mask[:, t : t + 1], step, alpha)
        return torch.logsumexp(alpha + self.end, dim=1)

    def score(self, emissions: Tensor, tags: Tensor, lengths: Tensor | None = None) -> Tensor:
        """``(B,)`` score of the given tag sequences."""
        mask = self._mask(emissions, lengths)
        tags = tags.masked_fill(~mask, 0)
        emitted = emissions.gather(2, tags.unsqueeze(2)).squeeze(2)  # (B, T)
        moved = self.transitions[tags[:, :-1], tags[:, 1:]]  # (B, T-1)
        last = tags.gather(1, (mask.sum(1, keepdim=True) - 1)).squeeze(1)  # (B,)
        total = self.start[tags[:, 0]] + (emitted * mask).sum(1) + (moved * mask[:, 1:]).sum(1)
        return total + self.end[last]

    def forward(self, emissions: Tensor, tags: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Mean negative log-likelihood of ``tags`` over the batch (a scalar loss)."""
        return (self.log_partition(emissions, lengths) - self.score(emissions, tags, lengths)).mean()

    @torch.no_grad()
    def decode(self, emissions: Tensor, lengths: Tensor | None = None) -> Tensor:
        """``(B, T)`` int64 best tag sequences (Viterbi); padded steps hold ``-100``."""
        mask = self._mask(emissions, lengths)
        B, T, _ = emissions.shape
        best = self.start + emissions[:, 0]  # (B, C)
        pointers = []
        for t in range(1, T):
            scores, index = (best.unsqueeze(2) + self.transitions).max(dim=1)  # (B, C) each
            pointers.append(torch.where(mask[:, t : t + 1], index, torch.arange(self.num_tags, device=index.device)))
            best = torch.where(mask[:, t : t + 1], scores + emissions[:, t], best)
        tag = (best + self.end).argmax(dim=1)  # (B,) the last valid tag; pointers past a length are identity
        path = [tag]
        for index in reversed(pointers):
            tag = index.gather(1, tag.unsqueeze(1)).squeeze(1)
            path.append(tag)
        tags = torch.stack(path[::-1], dim=1)  # (B, T)
        return tags.masked_fill(~mask, -100)
