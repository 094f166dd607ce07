"""A seeded TPE sampler whose resumed studies continue the search instead of repeating it.

A seeded ``optuna.samplers.TPESampler`` draws from one random stream that starts at its seed whenever
the sweep process starts, so resuming a study before ``n_startup_trials`` proposes the very
configurations it already ran (optuna#3255). ``TrialSeededTPESampler`` draws trial ``n``'s values from
a stream seeded by ``(seed, n)``: trial ``n`` gets the same values whether the study ran straight
through or was resumed at any point, and a resumed study goes on with new ones. Used as
``hydra.sweeper.sampler._target_`` in ``configs/hparams_search``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, TPESampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState


def trial_seed(seed: int, number: int) -> int:
    """The seed of trial ``number``'s draws: a well-mixed 32-bit function of ``(seed, number)``."""
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


class TrialSeededTPESampler(BaseSampler):
    """``TPESampler(seed=trial_seed(seed, trial.number), **tpe_kwargs)`` for each trial.

    Args:
        seed: the study's seed (``None``: unseeded, one TPE sampler for all trials, as optuna's).
        **tpe_kwargs: ``TPESampler`` arguments (``n_startup_trials``, ``multivariate``, ...).
    """

    def __init__(self, seed: int | None = None, **tpe_kwargs: Any) -> None:
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ValueError(f"TrialSeededTPESampler: seed must be a non-negative int or None, got {seed!r}")
        self.seed = seed
        self.tpe_kwargs = tpe_kwargs
        self._unseeded = TPESampler(seed=None, **tpe_kwargs) if seed is None else None
        self._samplers: dict[int, TPESampler] = {}  # trials asked and not yet told

    def _for(self, trial: FrozenTrial) -> TPESampler:
        if self._unseeded is not None:
            return self._unseeded
        if trial.number not in self._samplers:
            assert self.seed is not None
            self._samplers[trial.number] = TPESampler(seed=trial_seed(self.seed, trial.number), **self.tpe_kwargs)
        return self._samplers[trial.number]

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._for(trial).before_trial(study, trial)

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._for(trial).infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self._for(trial).sample_relative(study, trial, search_space)

    def sample_independent(
        self, study: Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self._for(trial).sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self, study: Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        self._for(trial).after_trial(study, trial, state, values)
        self._samplers.pop(trial.number, None)

    def reseed_rng(self) -> None:
        """Nothing to reseed: every trial's stream follows from the seed (optuna calls this for n_jobs > 1)."""
        if self._unseeded is not None:
            self._unseeded.reseed_rng()
