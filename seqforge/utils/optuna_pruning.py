"""Prune an Optuna trial from the validation metric of each epoch, inside the trial's real Lightning Trainer.

``configs/hparams_search`` adds ``callbacks.optuna_pruning`` to every trial of an Optuna sweep; the job
finds its trial from the sweep's storage, study name and its Hydra job number (the sweeper launches trial
``n`` as job ``n``). Turn pruning off with ``callbacks.optuna_pruning=null``.
"""

from __future__ import annotations

import math

import lightning as L
import optuna
from optuna.pruners import BasePruner, MedianPruner

MODE_OF_DIRECTION = {"MINIMIZE": "min", "MAXIMIZE": "max"}


class OptunaPruning(L.Callback):
    """Report ``monitor`` after each validation epoch to the running trial; stop it if the pruner says so.

    The trial ends by raising ``optuna.TrialPruned`` from the fit (no test stage); the sweeper records the
    trial as ``PRUNED`` and ``trials.csv`` as ``pruned``. Only rank 0 talks to the storage; its decision
    is broadcast, so every process of a DDP run stops together.

    Args:
        storage: the study's storage URL (``hydra.sweeper.storage``); an in-memory study cannot be reached
            from a job, so ``None`` is refused.
        study_name: the study's name (``hydra.sweeper.study_name``).
        trial: the trial's number (the job's ``hydra.job.num``).
        monitor: the validation metric reported (``None``: filled with the task's monitor by ``train``).
        mode: ``min`` or ``max``, the monitor's direction, checked against the study's direction
            (``None``: not checked).
        pruner: decides from the reported values (``None``: ``MedianPruner()``).
    """

    def __init__(
        self,
        storage: str | None,
        study_name: str,
        trial: int,
        monitor: str | None = None,
        mode: str | None = None,
        pruner: BasePruner | None = None,
    ) -> None:
        if storage is None:
            raise ValueError("OptunaPruning: storage is None; pruning needs the study in a storage the trial's job "
                             "can open (hydra.sweeper.storage=sqlite:///...), or turn it off: "
                             "callbacks.optuna_pruning=null")
        if mode not in (None, "min", "max"):
            raise ValueError(f"OptunaPruning: mode must be 'min', 'max' or None, got {mode!r}")
        self.storage, self.study_name, self.number = storage, study_name, trial
        self.monitor, self.mode = monitor, mode
        self.pruner = pruner if pruner is not None else MedianPruner()
        self.trial: optuna.trial.Trial | None = None  # rank 0, from setup

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or not trainer.is_global_zero:
            return
        if self.monitor is None:
            raise ValueError("OptunaPruning: monitor is None; name the validation metric to report")
        storage = optuna.storages.get_storage(self.storage)
        study = optuna.load_study(study_name=self.study_name, storage=storage, pruner=self.pruner)
        wanted = MODE_OF_DIRECTION[study.direction.name]
        if self.mode is not None and self.mode != wanted:
            raise ValueError(f"OptunaPruning: the study {self.study_name!r} is to {study.direction.name.lower()}, but "
                             f"the monitor {self.monitor} has mode {self.mode!r}; set hydra.sweeper.direction (or "
                             f"report another metric: callbacks.optuna_pruning.monitor=...)")
        trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(self.study_name),
                                                                   self.number)
        self.trial = optuna.trial.Trial(study, trial_id)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        epoch = trainer.current_epoch
        prune, value = False, math.nan
        if trainer.is_global_zero:
            assert self.trial is not None, "OptunaPruning: validation before setup('fit')"
            if self.monitor not in trainer.callback_metrics:
                raise KeyError(f"OptunaPruning: monitor {self.monitor!r} was not logged; logged metrics: "
                               f"{sorted(trainer.callback_metrics)}")
            value = float(trainer.callback_metrics[self.monitor])
            self.trial.report(value, step=epoch)
            prune = self.trial.should_prune()
        if trainer.strategy.broadcast(prune):
            raise optuna.TrialPruned(f"trial {self.number} pruned after epoch {epoch}: {self.monitor}={value:.6g}")
