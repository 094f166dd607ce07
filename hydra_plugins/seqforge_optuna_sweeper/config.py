"""The sweeper's settings, registered as ``hydra/sweeper=seqforge_optuna``.

No ``from __future__ import annotations`` here: Hydra loads plugin modules outside ``sys.modules``, where a
dataclass cannot resolve string annotations.
"""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class OptunaSweeperConf:
    """``hydra.sweeper`` settings (see ``seqforge.utils.optuna_sweep.run_study`` for their meaning)."""

    _target_: str = "hydra_plugins.seqforge_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    direction: str = "minimize"  # or maximize
    study_name: str | None = None
    storage: str | None = None  # e.g. sqlite:///${hydra.sweep.dir}/optuna.db; null: in memory
    n_trials: int = 20
    n_jobs: int = 1  # trials asked at once and handed to the launcher together
    max_failure_rate: float = 0.0  # of the trials this sweep ran; a higher failed fraction stops it
    sampler: Any = None  # a node with _target_ (an optuna sampler); null: optuna's TPESampler
    params: dict[str, Any] = field(default_factory=dict)  # key: search space (choice, interval, range, tag(log, ...))
    plots: bool = True  # optimization_history.png and param_importances.png in the sweep folder


ConfigStore.instance().store(group="hydra/sweeper", name="seqforge_optuna", node=OptunaSweeperConf,
                             provider="seqforge")
