"""Scores of probabilistic forecasts, element-wise (the tasks average them with ``torchmetrics.MeanMetric``).

- CRPS (continuous ranked probability score, lower is better, in the target's units):
  ``CRPS(F, y) = E|X - y| - E|X - X'| / 2`` for independent ``X, X' ~ F``. For a Gaussian it has the
  closed form of Gneiting & Raftery (2007), for a log-normal that of Baran & Lerch (2015); from a set of
  quantiles it is approximated by the *quantile-score approximation*: ``CRPS = 2 * integral over levels
  a in (0, 1) of the pinball loss at level a``, here twice the mean pinball loss over the given levels
  (a Riemann sum, exact as the levels fill (0, 1) evenly; with few levels it is a coarse estimate).
- Central intervals: the ``level`` interval (e.g. 0.8) runs from the ``(1 - level) / 2`` quantile to the
  ``(1 + level) / 2`` quantile. Coverage is the share of targets inside (closed interval), width the mean
  of ``upper - lower``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.distributions import Normal


def pinball_loss(pred: Tensor, target: Tensor, quantiles: Tensor) -> Tensor:
    """Element-wise pinball (quantile) loss: ``pred`` ``(..., Q)``, ``target`` ``(...)``, ``quantiles`` ``(Q,)``
    -> ``(..., Q)``."""
    diff = target.unsqueeze(-1) - pred
    return torch.maximum(quantiles * diff, (quantiles - 1) * diff)


def gaussian_crps(mean: Tensor, std: Tensor, target: Tensor) -> Tensor:
    """Closed-form CRPS of ``N(mean, std**2)`` at ``target`` (all the same shape): element-wise."""
    z = (target - mean) / std
    normal = Normal(torch.zeros_like(z), torch.ones_like(z))
    pdf, cdf = normal.log_prob(z).exp(), normal.cdf(z)
    return std * (z * (2 * cdf - 1) + 2 * pdf - 1 / math.sqrt(math.pi))


def lognormal_crps(mu: Tensor, sigma: Tensor, target: Tensor) -> Tensor:
    """Closed-form CRPS of ``exp(N(mu, sigma**2))`` at a positive ``target``: element-wise."""
    w = (torch.log(target) - mu) / sigma
    normal = Normal(torch.zeros_like(w), torch.ones_like(w))
    return target * (2 * normal.cdf(w) - 1) - 2 * torch.exp(mu + sigma**2 / 2) * (
        normal.cdf(w - sigma) + normal.cdf(sigma / math.sqrt(2)) - 1
    )


def quantile_crps(pred: Tensor, target: Tensor, quantiles: Tensor) -> Tensor:
    """Quantile-score approximation of CRPS: twice the mean pinball loss over the levels.

    ``pred`` ``(..., Q)`` (the forecast quantiles), ``target`` ``(...)``, ``quantiles`` ``(Q,)`` -> ``(...)``.
    """
    return 2 * pinball_loss(pred, target, quantiles).mean(dim=-1)


def interval_levels(
    owner: str, quantiles: tuple[float, ...], levels: tuple[float, ...]
) -> dict[float, tuple[int, int]]:
    """For each central interval ``level``, the indices of its lower and upper quantile in ``quantiles``.

    Raises ``ValueError`` (naming ``owner``) when a level's two quantiles are not both among ``quantiles``.
    """
    found = {}
    for level in levels:
        if not 0 < level < 1:
            raise ValueError(f"{owner}: interval levels must be in (0, 1), got {level}")
        ends = []
        for q in ((1 - level) / 2, (1 + level) / 2):
            index = [i for i, have in enumerate(quantiles) if abs(have - q) < 1e-6]
            if not index:
                raise ValueError(f"{owner}: the {level:.0%} interval needs the {q:g} quantile, but the net's "
                                 f"quantiles are {quantiles}; add it or drop the level from intervals")
            ends.append(index[0])
        found[level] = (ends[0], ends[1])
    return found


def symmetric_levels(quantiles: tuple[float, ...]) -> tuple[float, ...]:
    """The central interval levels that ``quantiles`` hold both ends of, e.g. ``(0.1, 0.5, 0.9) -> (0.8,)``."""
    levels = {round(1 - 2 * q, 6) for q in quantiles if q < 0.5 and any(abs(p - (1 - q)) < 1e-6 for p in quantiles)}
    return tuple(sorted(levels))


def gaussian_interval(mean: Tensor, std: Tensor, level: float) -> tuple[Tensor, Tensor]:
    """The central ``level`` interval of ``N(mean, std**2)``: ``(lower, upper)``, each ``mean``'s shape."""
    half = std * Normal(0.0, 1.0).icdf(torch.tensor((1 + level) / 2, dtype=mean.dtype, device=mean.device))
    return mean - half, mean + half


def level_name(level: float) -> str:
    """Metric- and column-name suffix of an interval level: ``0.8 -> "80"``, ``0.975 -> "97_5"``."""
    return f"{level * 100:g}".replace(".", "_")


def interval_coverage(lower: Tensor, upper: Tensor, target: Tensor) -> Tensor:
    """Element-wise 1.0 where ``lower <= target <= upper``, else 0.0."""
    return ((target >= lower) & (target <= upper)).to(target.dtype)
