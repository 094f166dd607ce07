"""The Hydra ``Sweeper`` plugin class: Hydra's side only; the study runs in ``seqforge.utils.optuna_sweep``."""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class OptunaSweeper(Sweeper):
    """Run ``n_trials`` trials of an Optuna study (ask/tell) through Hydra's configured launcher."""

    def __init__(self, **settings: Any) -> None:
        self.settings = settings
        self.config: DictConfig | None = None
        self.launcher: Any = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        from seqforge.utils.optuna_sweep import run_study  # optuna (the sweep extra) is imported only here

        assert self.config is not None, "OptunaSweeper.sweep before setup"
        return run_study(self.launcher, self.config, arguments, **self.settings)
