"""An Optuna study run through Hydra's launcher with Optuna's ask/tell API (``hydra/sweeper=seqforge_optuna``).

``run_study`` is what ``hydra_plugins.seqforge_optuna_sweeper`` calls for ``-m`` runs of
``configs/hparams_search``. Each batch of ``n_jobs`` trials is asked from the study, launched as Hydra jobs
(job ``num`` = trial number, so a job can find its trial: ``seqforge.utils.optuna_pruning``) and told back:

- a job that returns a finite float: ``COMPLETE`` with that value;
- a job that raises ``optuna.TrialPruned`` (the pruning callback): ``PRUNED``;
- a job that raises anything else, or returns NaN, infinity or no number: ``FAIL``, and the sweep goes on
  while the failed fraction of its trials stays within ``max_failure_rate``.

An interrupt (SIGTERM, Ctrl-C) ends the sweep with the running trials left ``RUNNING`` in the storage. With
a storage file the same command resumes the study (``n_trials`` more). At the end the sweep folder gets
``optimization_results.yaml`` (best trial of the whole study, trials by state) and, with ``plots``,
``optimization_history.png`` and ``param_importances.png`` (Optuna's matplotlib plots).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import optuna
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState
from packaging.version import Version

from seqforge.utils.sweep import error_line

log = logging.getLogger(__name__)

RESULTS_FILE = "optimization_results.yaml"
HISTORY_PLOT = "optimization_history.png"
IMPORTANCE_PLOT = "param_importances.png"
DIRECTIONS = ("minimize", "maximize")
CATEGORICAL_TYPES = (type(None), bool, int, float, str)


def distribution(key: str, sweep: Any) -> BaseDistribution:
    """The Optuna distribution of one Hydra sweep expression parsed from ``key=...``.

    ``choice(a, b)`` (or ``a,b``): categorical; ``interval(lo, hi)``: uniform float, ``int(interval(lo, hi))``:
    uniform int; ``range(start, stop, step)``: the values a grid sweep of that range runs (int, or float steps);
    ``tag(log, interval(...))`` or ``tag(log, range(...))``: log scale.

    Raises:
        ValueError: a sweep Optuna cannot draw from (``glob``, list or dict choices, a log scale with a
            step ...), naming the key.
    """
    log_scale = "log" in getattr(sweep, "tags", ())  # Hydra's glob() has no tags
    if isinstance(sweep, ChoiceSweep):
        choices = [choice for choice in sweep.list if isinstance(choice, CATEGORICAL_TYPES)]
        if len(choices) < len(sweep.list):
            bad = [choice for choice in sweep.list if not isinstance(choice, CATEGORICAL_TYPES)]
            raise ValueError(f"search space '{key}': choices must be None, bool, int, float or str, got {bad!r}")
        return CategoricalDistribution(choices)
    try:
        if isinstance(sweep, IntervalSweep):
            if isinstance(sweep.start, int) and isinstance(sweep.end, int):
                return IntDistribution(sweep.start, sweep.end, log=log_scale)
            return FloatDistribution(float(sweep.start or 0.0), float(sweep.end or 0.0), log=log_scale)
        if isinstance(sweep, RangeSweep):
            values = list(sweep.range())
            if not values:
                raise ValueError(f"{sweep} is empty")
            if all(isinstance(v, int) for v in (sweep.start, sweep.stop, sweep.step)):
                return IntDistribution(int(values[0]), int(values[-1]), log=log_scale, step=int(sweep.step))
            step = None if log_scale else float(sweep.step)  # optuna draws a log-scale float without a step
            last = Decimal(str(values[0])) + Decimal(str(sweep.step)) * (len(values) - 1)  # no float round-off
            return FloatDistribution(float(values[0]), float(last), log=log_scale, step=step)
    except ValueError as err:
        raise ValueError(f"search space '{key}': {err}") from None
    raise ValueError(f"search space '{key}': {type(sweep).__name__} is not supported by the Optuna sweeper "
                     "(use choice, interval, range or tag(log, ...))")


def search_space(params: dict[str, Any], arguments: Sequence[str]) -> tuple[dict[str, BaseDistribution], list[str]]:
    """The distributions to draw and the overrides every trial gets.

    Args:
        params: ``hydra.sweeper.params`` (key: sweep expression or plain value).
        arguments: the command line's overrides; a sweep expression there (``model.net.rnn.cell=choice(lstm,gru)``)
            joins the search space and replaces a ``params`` entry of the same key.
    Returns:
        ``({key: distribution}, [fixed override, ...])``, both in the order given.
    """
    parser = OverridesParser.create()
    lines = [f"{key}={value}" for key, value in params.items()] + list(arguments)
    overrides: dict[str, Override] = {}
    for override in parser.parse_overrides(lines):
        overrides[override.get_key_element()] = override  # the command line comes last, so it wins
    space = {key: distribution(key, o.value()) for key, o in overrides.items() if o.is_sweep_override()}
    fixed = [o.input_line or f"{key}={o.get_value_element_as_str()}" for key, o in overrides.items()
             if not o.is_sweep_override()]
    return space, fixed


def trial_overrides(trial: optuna.trial.Trial, fixed: list[str]) -> list[str]:
    """A trial's job overrides: the fixed ones, then its drawn values."""
    drawn = [f"{key}={Override._get_value_element_as_str(value)}" for key, value in trial.params.items()]
    return [*fixed, *drawn]


def tell(study: optuna.Study, trial: optuna.trial.Trial, result: JobReturn) -> TrialState:
    """Record how a trial's job ended (see the module's docstring); returns the state told."""
    if result.status == JobStatus.COMPLETED:
        value = result.return_value
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            log.warning(f"Trial {trial.number} failed: its job returned {value!r}, not a finite number")
            study.tell(trial, state=TrialState.FAIL)
            return TrialState.FAIL
        study.tell(trial, float(value))
        log.info(f"Trial {trial.number} finished with value {value}")
        return TrialState.COMPLETE
    try:
        _ = result.return_value  # re-raises the job's exception
    except optuna.TrialPruned as pruned:
        study.tell(trial, state=TrialState.PRUNED)
        log.info(f"Trial {trial.number} pruned: {pruned}")
        return TrialState.PRUNED
    except Exception as error:
        study.tell(trial, state=TrialState.FAIL)
        log.warning(f"Trial {trial.number} failed: {error_line(error)}")
        return TrialState.FAIL
    raise AssertionError(f"job of trial {trial.number}: status {result.status} without an exception")


def consecutive(trials: list[optuna.trial.Trial]) -> list[list[optuna.trial.Trial]]:
    """``trials`` cut into runs of consecutive numbers (one launch each: job num = trial number)."""
    runs: list[list[optuna.trial.Trial]] = []
    for trial in trials:
        if runs and runs[-1][-1].number + 1 == trial.number:
            runs[-1].append(trial)
        else:
            runs.append([trial])
    return runs


def run_study(
    launcher: Any,
    config: DictConfig,
    arguments: list[str],
    *,
    direction: str,
    study_name: str | None,
    storage: str | None,
    n_trials: int,
    n_jobs: int,
    max_failure_rate: float,
    sampler: optuna.samplers.BaseSampler | None,
    params: dict[str, Any] | None,
    plots: bool,
) -> optuna.Study:
    """Create (or load, from ``storage``) the study and run ``n_trials`` more trials through ``launcher``.

    Args:
        launcher: Hydra's configured launcher (basic, joblib, submitit ...).
        config: the sweep's config (``config.hydra.sweep.dir`` gets the results and plots).
        arguments: the command line's overrides.
        direction: ``minimize`` or ``maximize``, what the jobs return.
        study_name: the study's name in ``storage`` (``None``: Optuna picks one).
        storage: an Optuna storage URL (``sqlite:///<sweep dir>/optuna.db``); ``None``: in memory.
        n_trials: trials to run in this sweep, also when the study already holds some.
        n_jobs: trials asked at once and handed to the launcher together.
        max_failure_rate: the sweep stops (``RuntimeError``) once more than this fraction of its
            finished trials failed; 1.0 never stops it.
        sampler: an Optuna sampler (``None``: ``TPESampler()``).
        params: ``hydra.sweeper.params``: the search space and fixed overrides.
        plots: write the optimization history and parameter-importance plots.

    Raises:
        ValueError: a bad setting, naming it (``hydra.sweeper.direction`` ...), before any trial runs.
        RuntimeError: too many failed trials, or no completed trial in the whole study.
    """
    if Version(optuna.__version__) < Version("4"):
        raise ImportError(f"seqforge's Optuna sweeper needs optuna>=4, found {optuna.__version__}: "
                          "pip install 'optuna>=4' (or the sweep extra: pip install -e '.[sweep]')")
    if direction not in DIRECTIONS:
        raise ValueError(f"hydra.sweeper.direction: expected one of {DIRECTIONS}, got {direction!r}")
    for name, value, low in (("n_trials", n_trials, 1), ("n_jobs", n_jobs, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"hydra.sweeper.{name}: expected an int >= {low}, got {value!r}")
    if not 0.0 <= max_failure_rate <= 1.0:
        raise ValueError(f"hydra.sweeper.max_failure_rate: expected a number in [0, 1], got {max_failure_rate!r}")
    space, fixed = search_space(dict(params or {}), arguments)
    study = optuna.create_study(study_name=study_name, storage=storage, sampler=sampler,
                                direction=optuna.study.StudyDirection[direction.upper()], load_if_exists=True)
    if study.direction.name.lower() != direction:
        raise ValueError(f"hydra.sweeper.direction: the study {study.study_name!r} in {storage} is to "
                         f"{study.direction.name.lower()}, got {direction!r}")
    log.info(f"Study {study.study_name!r} ({direction}) in {storage or 'memory'}: {len(study.trials)} trials so "
             f"far, {n_trials} to run; sampler {type(study.sampler).__name__}; searching {sorted(space)}")

    states: list[TrialState] = []
    while len(states) < n_trials:
        batch = [study.ask(space) for _ in range(min(n_jobs, n_trials - len(states)))]
        for run in consecutive(batch):
            results = launcher.launch([trial_overrides(t, fixed) for t in run], initial_job_idx=run[0].number)
            states += [tell(study, trial, result) for trial, result in zip(run, results, strict=True)]
        failed = states.count(TrialState.FAIL)
        if failed / len(states) > max_failure_rate:
            raise RuntimeError(f"{failed} of {len(states)} trials failed, more than "
                               f"hydra.sweeper.max_failure_rate={max_failure_rate} (see trials.csv)")

    sweep_dir = Path(config.hydra.sweep.dir)
    write_results(study, sweep_dir / RESULTS_FILE)
    if plots:
        save_plots(study, sweep_dir)
    return study


def write_results(study: optuna.Study, path: Path) -> None:
    """``optimization_results.yaml``: the best trial of the whole study and its trials counted by state.

    Raises:
        RuntimeError: no trial of the study completed.
    """
    counts = {state.name: sum(t.state == state for t in study.trials) for state in TrialState}
    if not counts["COMPLETE"]:
        raise RuntimeError(f"no trial of study {study.study_name!r} completed ({counts}); see trials.csv")
    best = study.best_trial
    results = {"name": "optuna", "study_name": study.study_name, "direction": study.direction.name.lower(),
               "best_trial": best.number, "best_value": best.value, "best_params": best.params,
               "trials": {name: n for name, n in counts.items() if n}}
    path.write_text(yaml.safe_dump(results, sort_keys=False), encoding="utf-8")
    log.info(f"Best trial {best.number}: value {best.value}, params {best.params} ({path})")


def save_plots(study: optuna.Study, folder: Path) -> list[Path]:
    """Save Optuna's optimization history and parameter importances as PNGs in ``folder``.

    The importance plot needs two completed trials with different values of a parameter; without them it is
    skipped with a warning. Returns the files written.
    """
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure
    from optuna.visualization import matplotlib as optuna_plots

    written = []
    for name, plot in ((HISTORY_PLOT, optuna_plots.plot_optimization_history),
                       (IMPORTANCE_PLOT, optuna_plots.plot_param_importances)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # the matplotlib backend's
            try:
                axes = plot(study)
            except (ValueError, RuntimeError) as err:
                log.warning(f"No {name}: {err}")
                continue
        figure = axes.figure
        assert isinstance(figure, Figure)  # optuna's plots draw on a figure of their own
        figure.savefig(folder / name, dpi=120, bbox_inches="tight")
        plt.close(figure)
        written.append(folder / name)
    log.info(f"Plots: {', '.join(str(p) for p in written) or 'none'}")
    return written
