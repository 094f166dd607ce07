"""The trial-seeded TPE sampler: a resumed study continues with new configurations, deterministically."""

from __future__ import annotations

from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

from seqforge.utils.optuna_sampler import TrialSeededTPESampler, trial_seed  # noqa: E402


def objective(trial) -> float:
    lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    width = trial.suggest_categorical("width", [32, 64, 128])
    return lr * width


def params_after(url: str, name: str, make_sampler, runs: list[int]) -> list[tuple]:
    """Run ``runs[0]`` trials, then resume the stored study with a fresh sampler for each further count."""
    for n_trials in runs:  # a fresh sampler per launch, as a new sweep process builds one
        study = optuna.create_study(study_name=name, storage=url, sampler=make_sampler(), load_if_exists=True)
        study.optimize(objective, n_trials=n_trials)
    return [tuple(sorted(t.params.items())) for t in optuna.load_study(study_name=name, storage=url).trials]


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/optuna.db"


def test_plain_seeded_tpe_repeats_its_trials_on_resume(url: str) -> None:
    """The bug this sampler exists for (optuna#3255): resuming before n_startup_trials repeats the trials."""
    params = params_after(url, "plain", lambda: optuna.samplers.TPESampler(seed=7, n_startup_trials=8), [3, 3])
    assert params[3:] == params[:3]


@pytest.mark.parametrize("n_startup_trials", [8, 2])  # resumed among the random trials, and inside TPE
def test_resumed_study_continues_with_new_configurations_as_an_unbroken_one(url: str, n_startup_trials: int) -> None:
    def sampler() -> TrialSeededTPESampler:
        return TrialSeededTPESampler(seed=7, n_startup_trials=n_startup_trials)

    resumed = params_after(url, "resumed", sampler, [3, 3])
    assert len(set(resumed)) == 6
    assert params_after(url, "straight", sampler, [6]) == resumed  # the same study as one without a break
    assert params_after(url, "again", sampler, [2, 1, 3]) == resumed  # deterministic for a seed and history
    other = params_after(url, "other_seed", lambda: TrialSeededTPESampler(seed=8, n_startup_trials=8), [6])
    assert not set(other) & set(resumed)


def test_trial_seeds_differ_between_trials_and_seeds() -> None:
    seeds = {trial_seed(seed, number) for seed in range(5) for number in range(50)}
    assert len(seeds) == 250 and all(0 <= s < 2**32 for s in seeds)


@pytest.mark.parametrize("seed", [-1, 1.5, "7", True])
def test_bad_seed_is_refused_by_name(seed) -> None:
    with pytest.raises(ValueError, match=r"TrialSeededTPESampler: seed must be a non-negative int or None, got"):
        TrialSeededTPESampler(seed=seed)
