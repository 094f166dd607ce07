"""What every task shares: optimizer/scheduler from Hydra partials, per-stage metrics, best-value tracking.

A task is a ``LightningModule`` holding a plain ``nn.Module`` ``net``. Subclasses implement
``model_step(batch) -> dict`` (at least ``loss``, ``preds``, ``target``) and build their metrics with
:meth:`SequenceTask.setup_metrics`. The base logs ``<stage>/loss`` and ``<stage>/<metric>`` for
``train``/``val``/``test`` and ``<monitor>_best`` (e.g. ``val/acc_best``) after every validation epoch.

Scheduler configuration: ``scheduler`` is a partial taking the optimizer (stepped every epoch, monitoring
the task's ``monitor`` for ``ReduceLROnPlateau``), or a dict ``{"scheduler": partial, "monitor": ...,
"interval": "epoch" | "step", "frequency": 1}`` whose keys override those defaults.

Resuming in the middle of an epoch: every checkpoint written during ``fit`` holds the task's
:meth:`SequenceTask.epoch_carry` (the running states of the epoch-level train metrics, and what a subclass
carries from batch to batch), loaded back when the resumed run reaches the batch it precedes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torchmetrics import MaxMetric, MeanMetric, Metric, MetricCollection, MinMetric

from seqforge.tasks.plots import PictureLogger

if TYPE_CHECKING:
    from lightning.fabric.utilities.data import AttributeDict

STAGES = ("train", "val", "test")
EPOCH_CARRY = "epoch_carry"  # the checkpoint key of SequenceTask.epoch_carry()


def unpack_batch(owner: str, batch: Any, names: Sequence[str]) -> tuple[Any, ...]:
    """The batch as a tuple of ``len(names)`` items; a clear error for any other shape of batch."""
    if not isinstance(batch, (tuple, list)) or len(batch) != len(names):
        got = f"{len(batch)} items" if isinstance(batch, (tuple, list)) else type(batch).__name__
        raise ValueError(f"{owner}: expected a batch ({', '.join(names)}), got {got}")
    return tuple(batch)


def check_class_ids(owner: str, name: str, y: Tensor, num_classes: int, ignore_index: int | None = None) -> None:
    """Class ids must be int64 in ``[0, num_classes)`` (``ignore_index`` allowed)."""
    if y.dtype != torch.long:
        raise TypeError(f"{owner}: {name} must be int64 class ids, got {y.dtype}")
    valid = y if ignore_index is None else y[y != ignore_index]
    if valid.numel() and (int(valid.min()) < 0 or int(valid.max()) >= num_classes):
        raise ValueError(
            f"{owner}: {name} holds class ids in [{int(valid.min())}, {int(valid.max())}] but the model has "
            f"num_classes={num_classes}; does the data's label set match the model?"
        )


def check_label_smoothing(owner: str, value: float) -> float:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{owner}: label_smoothing must be in [0, 1), got {value}")
    return float(value)


def best_tracker(mode: str) -> Metric:
    """The running best of a metric: its maximum for ``mode="max"``, else its minimum."""
    return MaxMetric() if mode == "max" else MinMetric()


class SequenceTask(L.LightningModule):
    """Base of every task.

    Args:
        net: the model (``nn.Module``).
        optimizer: ``functools.partial`` of an optimizer class, called with ``params=`` (needed to train;
            ``None`` is fine for evaluation, e.g. ``Task.load_from_checkpoint(path, net=net)``).
        scheduler: ``None``, a partial called with the optimizer, or a dict (see module docstring).

    The checkpoint's hyper-parameters hold only the plain task options (not the net, not the partials).

    Class attributes ``monitor`` (e.g. ``"val/acc"``) and ``monitor_mode`` (``"max"``/``"min"``) name the
    metric that checkpointing and early stopping should watch.
    """

    monitor: str = "val/loss"
    monitor_mode: str = "min"
    train_metrics: MetricCollection  # the three are created by setup_metrics
    val_metrics: MetricCollection
    test_metrics: MetricCollection
    examples: Any  # what keep_examples kept from the first validation batch for log_pictures

    if TYPE_CHECKING:
        # save_hyperparameters() keeps the init arguments in an AttributeDict: `self.hparams.<name>` is valid
        @property
        def hparams(self) -> AttributeDict: ...

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        # only plain task options go into the checkpoint (loadable with torch.load(weights_only=True)); the
        # net's weights are in the state dict and the optimizer/scheduler partials stay with the config
        self.save_hyperparameters(logger=False, ignore=["net", "optimizer", "scheduler"])
        if not isinstance(net, nn.Module):
            raise TypeError(f"{type(self).__name__}: net must be an nn.Module, got {type(net).__name__}")
        if optimizer is not None and not callable(optimizer):
            raise TypeError(
                f"{type(self).__name__}: optimizer must be a partial like functools.partial(torch.optim.Adam, "
                f"lr=1e-3), got {optimizer!r}"
            )
        self.net = net
        self.optimizer_factory, self.scheduler_config = optimizer, scheduler
        self.train_loss, self.val_loss, self.test_loss = MeanMetric(), MeanMetric(), MeanMetric()
        self.best = best_tracker(self.monitor_mode)
        self.own_best: Metric | None = None  # the class's own metric's best, while the run watches another one
        self._resumed_best: dict[str, float] = {}  # the checkpoint's best values, set on resume
        self._resumed_carry: dict[str, Any] | None = None  # after a restore: its epoch_carry ({} if none)
        self._carry_before: dict[str, Any] | None = None  # epoch_carry() as the running batch started

    # --- metrics ------------------------------------------------------------------------------------------
    def setup_metrics(self, make: Callable[[], dict[str, Metric]]) -> None:
        """Create ``train_metrics``, ``val_metrics``, ``test_metrics`` from a factory of named metrics."""
        for stage in STAGES:
            metrics = cast("dict[str, Metric | MetricCollection]", make())  # dict is invariant in its values
            setattr(self, f"{stage}_metrics", MetricCollection(metrics, compute_groups=False))

    def metrics(self, stage: str) -> MetricCollection:
        return getattr(self, f"{stage}_metrics")

    def update_metrics(self, stage: str, out: dict[str, Any]) -> None:
        """Feed ``out["preds"]``/``out["target"]`` to the stage's metrics (override for other inputs)."""
        self.metrics(stage).update(out["preds"], out["target"])

    def monitored_metric(self, monitor: str | None = None) -> Metric:
        """The metric object named by ``monitor`` (default: the task's; ``val/loss`` or ``val/<name>``)."""
        name = (monitor or self.monitor).split("/", 1)[1]
        return self.val_loss if name == "loss" else self.val_metrics[name]

    def set_monitor(self, monitor: str, mode: str) -> None:
        """Watch ``monitor`` (``val/loss`` or ``val/<one of val_metrics>``) with ``mode`` (``min``/``max``)
        instead of the class's own: checkpoint's ``monitor_best``, a plateau scheduler and ``<monitor>_best``
        follow it (``train()`` calls this with the run's one monitor). The class's own best (e.g.
        ``val/acc_best``) is still logged beside it.

        Raises:
            ValueError: a monitor that is not one of the task's validation metrics, or another mode.
        """
        names = ["val/loss", *(f"val/{name}" for name in self.val_metrics)]
        if monitor not in names:
            raise ValueError(f"{type(self).__name__}: monitor must be one of {names}, got {monitor!r}")
        if mode not in ("min", "max"):
            raise ValueError(f"{type(self).__name__}: monitor mode must be min or max, got {mode!r}")
        if (monitor, mode) != (self.monitor, self.monitor_mode):
            cls = type(self)
            self.own_best = best_tracker(cls.monitor_mode) if monitor != cls.monitor else None
            self.monitor, self.monitor_mode = monitor, mode
            self.best = best_tracker(mode)

    @property
    def lr(self) -> float | None:
        """The learning rate in the optimizer partial (``None`` without one): what Lightning's learning-rate
        finder (``Tuner.lr_find(task, attr_name="lr")``) reads and sets."""
        factory = self.optimizer_factory
        return factory.keywords.get("lr") if isinstance(factory, functools.partial) else None

    @lr.setter
    def lr(self, value: float) -> None:
        if not isinstance(self.optimizer_factory, functools.partial):
            raise TypeError(f"{type(self).__name__}: lr is set on an optimizer partial, got {self.optimizer_factory!r}")
        self.optimizer_factory = functools.partial(self.optimizer_factory, lr=value)  # keywords merge

    def model_step(self, batch: Any) -> dict[str, Any]:
        """``{"loss": scalar, "preds": ..., "target": ..., "batch_size": int}`` for one batch."""
        raise NotImplementedError

    def _step(self, batch: Any, stage: str) -> dict[str, Any]:
        out = self.model_step(batch)
        loss, batch_size = out["loss"], out["batch_size"]  # batch_size weights the epoch mean
        getattr(self, f"{stage}_loss").update(loss.detach(), batch_size)  # a metric: resumable epoch means
        if stage == "train":
            self.log("train/loss_step", loss, on_step=True, on_epoch=False, batch_size=batch_size)  # long runs
        self.update_metrics(stage, out)
        self._log_epoch_means(stage)
        return out

    def _log_epoch_means(self, stage: str) -> None:
        """Log ``<stage>/loss`` and ``<stage>/<metric>``: Lightning computes them at the epoch's end."""
        self.log(f"{stage}/loss", getattr(self, f"{stage}_loss"), on_step=False, on_epoch=True, prog_bar=True)
        for name, metric in self.metrics(stage).items():
            self.log(f"{stage}/{name}", metric, on_step=False, on_epoch=True, prog_bar=stage != "train")

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._step(batch, "train")["loss"]

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        out = self._step(batch, "val")
        if batch_idx == 0:
            self.keep_examples(batch, out)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "test")

    def on_fit_start(self) -> None:
        # a validate()/test() run before fit() resets metric states inside inference mode, and inference
        # tensors cannot be updated in place later: renew every state outside inference mode
        for module in self.modules():
            if isinstance(module, Metric):
                module.reset()

    def on_train_start(self) -> None:
        for key, tracker in self._trackers().items():
            tracker.reset()  # forget values seen during the sanity check
            if key in self._resumed_best:  # a resumed run's <monitor>_best continues from the checkpoint's
                tracker.update(torch.tensor(self._resumed_best[key]))
        self._resumed_best = {}

    def _trackers(self) -> dict[str, Metric]:
        """The best-value trackers by checkpoint key: ``monitor_best`` (the task's monitor) and, while it
        watches another metric than its class's, ``own_best``."""
        return {"monitor_best": self.best} | ({"own_best": self.own_best} if self.own_best is not None else {})

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # torchmetrics states are not in the state dict: keep the best value for a resumed run (a plain float)
        for key, tracker in self._trackers().items():
            if tracker.update_count:
                checkpoint[key] = float(tracker.compute())
        trainer = self._trainer
        # under DDP each process has its own running state, and the checkpoint would keep only the first's
        if trainer is not None and trainer.state.fn == TrainerFn.FITTING and trainer.world_size == 1:
            progress: Any = trainer.fit_loop.epoch_loop.batch_progress.current  # trackers with all four counts
            # a batch started but not processed (a crash inside it) is replayed on resume: carry what it started with
            before = self._carry_before if progress.started > progress.processed else None
            carry = before if before is not None else self.epoch_carry()
            checkpoint[EPOCH_CARRY] = {"epoch": trainer.current_epoch, "batch": progress.processed, **carry}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._resumed_best = {key: checkpoint[key] for key in ("monitor_best", "own_best") if key in checkpoint}
        self._resumed_carry = checkpoint.get(EPOCH_CARRY, {})

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        carry, self._resumed_carry = self._resumed_carry, None
        if carry and (carry["epoch"], carry["batch"]) == (self.current_epoch, batch_idx):
            self.load_epoch_carry(carry)  # the first batch after a resume in the middle of an epoch
        elif carry is not None and batch_idx > 0:
            rank_zero_warn(f"{type(self).__name__}: resumed at batch {batch_idx} of epoch {self.current_epoch} from "
                           "a checkpoint without the running epoch state (one written under DDP, or before "
                           "seqforge kept it): this epoch's train means cover the batches from here on only")
        self._carry_before = self.epoch_carry()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._carry_before = None

    def on_train_epoch_end(self) -> None:
        carry, self._resumed_carry = self._resumed_carry, None
        if carry and carry["epoch"] == self.current_epoch:  # resumed in the validation after the last batch
            self.load_epoch_carry(carry)
            self._log_epoch_means("train")  # no batch of this epoch ran since, so nothing logged them yet

    # --- what a training epoch carries from batch to batch ----------------------------------------------------
    def epoch_carry(self) -> dict[str, Any]:
        """What the running training epoch carries into its next batch, as copies: ``{"metrics": {name: state}}``,
        the running states of the epoch-level train metrics (``train/loss`` and ``train_metrics``).

        Every checkpoint written during ``fit`` stores it as ``checkpoint["epoch_carry"]`` with the epoch and
        the batch it precedes; a run resumed at that batch loads it back (:meth:`load_epoch_carry`), so its
        epoch means cover the whole epoch, as in an uninterrupted run (resumed in the validation after the
        epoch's last batch, it is loaded and logged at the epoch's end). Under DDP it is not stored (each
        process has its own); a run resumed there in the middle of an epoch warns. Subclasses add what else
        they carry (the language model's recurrent state).
        """
        return {"metrics": {name: metric_state(metric) for name, metric in self._epoch_metrics().items()}}

    def load_epoch_carry(self, carry: dict[str, Any]) -> None:
        """Set what :meth:`epoch_carry` returned (from a checkpoint) back into the task.

        Raises:
            ValueError: the checkpoint's metrics are not this task's (the names of both sides).
        """
        metrics, stored = self._epoch_metrics(), carry["metrics"]
        if stored.keys() != metrics.keys():
            raise ValueError(f"{type(self).__name__}: the checkpoint's epoch_carry holds the train metrics "
                             f"{sorted(stored)}, this task has {sorted(metrics)}")
        for name, metric in metrics.items():
            load_metric_state(metric, stored[name], f"{type(self).__name__}: epoch_carry metric {name!r}")

    def _epoch_metrics(self) -> dict[str, Metric]:
        """The train metrics whose epoch means are logged, by module name (those inside wrappers too)."""
        named = {"train_loss": self.train_loss, **{f"train_metrics.{name}": module for name, module in
                                                   self.train_metrics.named_modules() if name}}
        return {name: module for name, module in named.items() if isinstance(module, Metric)}

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self.best.update(self.monitored_metric().compute())
        self.log(f"{self.monitor}_best", self.best.compute(), prog_bar=True)
        if self.own_best is not None:
            self.own_best.update(self.monitored_metric(type(self).monitor).compute())
            self.log(f"{type(self).monitor}_best", self.own_best.compute())
        writer = PictureLogger(self.trainer.loggers, folder=self.picture_folder())
        if writer and getattr(self, "examples", None) is not None:
            self.log_pictures(writer, self.examples)

    # --- pictures -----------------------------------------------------------------------------------------
    def keep_examples(self, batch: Any, out: dict[str, Any]) -> None:
        """Keep what :meth:`log_pictures` needs from the first validation batch (default: nothing)."""
        self.examples = None

    def picture_folder(self) -> Path | None:
        """A folder where the figures are also saved as PNG files (default: none, the loggers only)."""
        return None

    def log_pictures(self, writer: Any, examples: Any) -> None:
        """Log figures/text of the kept examples through ``writer.add_figure``/``add_text`` (default: nothing).

        ``writer`` is a :class:`~seqforge.tasks.plots.PictureLogger` over the run's loggers during training.
        """

    # --- optimization ---------------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            raise ValueError(
                f"{type(self).__name__}: training needs an optimizer, e.g. "
                "optimizer=functools.partial(torch.optim.Adam, lr=1e-3); none was given"
            )
        optimizer = self.optimizer_factory(params=self.parameters())
        scheduler = self.scheduler_config
        if scheduler is None:
            return optimizer
        config: dict[str, Any] = {"monitor": self.monitor, "interval": "epoch", "frequency": 1}
        if isinstance(scheduler, Mapping):
            config.update(scheduler)
            factory = config.pop("scheduler", None)
            if not callable(factory):
                raise ValueError(
                    f"{type(self).__name__}: a scheduler dict needs a 'scheduler' partial, got keys {sorted(scheduler)}"
                )
        else:
            factory = scheduler
        config["scheduler"] = factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": config}


def datamodule_attr(task: L.LightningModule, name: str) -> Any:
    """``trainer.datamodule.<name>`` when the task runs under a Trainer with a datamodule that has it."""
    trainer = task._trainer
    datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
    return getattr(datamodule, name, None)


def metric_state(metric: Metric) -> dict[str, Any]:
    """A copy of a torchmetrics metric's running state: ``{"state": {name: tensor or list of tensors},
    "update_count": int}`` (plain data, loadable with ``torch.load(weights_only=True)``)."""
    state = {name: value.detach().clone() if isinstance(value, Tensor) else [v.detach().clone() for v in value]
             for name, value in metric.metric_state.items()}
    return {"state": state, "update_count": metric.update_count}


def load_metric_state(metric: Metric, saved: dict[str, Any], owner: str) -> None:
    """Set a state :func:`metric_state` returned back into ``metric`` (on the metric's device).

    Raises:
        ValueError: ``saved`` names other states than ``metric`` has (``owner`` starts the message).
    """
    if saved["state"].keys() != metric.metric_state.keys():
        raise ValueError(f"{owner}: the checkpoint holds the states {sorted(saved['state'])}, "
                         f"{type(metric).__name__} has {sorted(metric.metric_state)}")
    device = metric.device
    for name, value in saved["state"].items():
        setattr(metric, name, value.to(device) if isinstance(value, Tensor) else [v.to(device) for v in value])
    metric._update_count = int(saved["update_count"])  # torchmetrics keeps the count private: compute() reads it
    metric._computed = None  # no cached result of the state before
