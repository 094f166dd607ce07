"""Train a task from a Hydra config: ``train(cfg)`` is what ``scripts/train.py`` runs.

The flow is a straight list: check the config (and, when resuming, the checkpoint's config against it),
seed, build the datamodule and read its ``net_kwargs`` (data-dependent sizes such as ``input_size`` or
``vocab_size``) and its ``recipe()`` if it has one (settings derived from the data, filled into the config
keys left ``null``), build the task with those merged into ``model.net``, build callbacks, loggers and
trainer, fit, test with the best checkpoint, write ``metrics.json`` into the run folder.

Resuming (``ckpt_path=PATH`` or ``ckpt_path=last``) follows one policy, :data:`RESUME_POLICY`: a setting
that differs from the checkpoint's run is applied (the optimizer's hyperparameters are set on the
restored optimizer, early-stopping patience on the restored callback, anything else is read from the new
config) unless it would make the resumed run a different one (model sizes, data, seed), which is refused
with the key named.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import signal
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import lightning as L
import torch
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback as HydraCallback
from hydra.utils import get_class
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, Timer
from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf, open_dict

from seqforge.callbacks import AtomicCheckpointIO, StopRequest, interrupt_exit_code, stop_at_batch_end
from seqforge.checkpoint import CHECKPOINT_KEY, ConfigInCheckpoint, read_checkpoint
from seqforge.data.recipes import apply_recipe
from seqforge.loggers import CSV_ROWS, CSVLogger, CSVRowsInCheckpoint
from seqforge.utils.config import ConfigError, TrainSchema, check_config, instantiate_node, print_config_tree

if TYPE_CHECKING:
    from seqforge.data.base import SplitDataModule
    from seqforge.tasks.base import SequenceTask

log = logging.getLogger(__name__)

TREE_ORDER = ("data", "model", "callbacks", "logger", "trainer", "paths", "extras")
CHECKED_GROUPS = ("data", "model", "trainer", "callbacks", "logger")
# What a resumed run does with a setting that differs from the checkpoint's run: the first matching
# prefix of the dotted key decides. "apply": the new value is used (optimizer hyperparameters are set on
# the restored optimizer); "refuse": a ConfigError naming the key. Keys matching nothing are applied.
RESUME_POLICY: tuple[tuple[str, str], ...] = (
    ("model.optimizer._target_", "refuse"),  # another optimizer class cannot take the saved state
    ("model.optimizer.", "apply"),  # lr, weight_decay, betas ...: set on the restored param groups
    ("model.scheduler", "refuse"),  # the restored scheduler state would silently keep the old settings
    ("model.net.rnn.backend", "apply"),  # the same function computed another way
    ("model.net", "refuse"),  # sizes and architecture: the weights would not fit or mean something else
    ("data.num_workers", "apply"),
    ("data.data_dir", "apply"),
    ("data", "refuse"),  # samples, order, vocabulary, scaling: a different run
    ("seed", "refuse"),  # data order and random draws follow the seed
    ("monitor", "refuse"),  # the restored best values and early-stopping counts belong to the old metric
)
LAST = "last"
# Keys a checkpoint written before they existed does not store: absent there, they are not compared.
ADDED_KEYS = ("monitor", "monitor_mode", "tune")
TUNE_CHOICES = ("batch_size", "lr")  # the order they run in: the learning rate depends on the batch size
# Third-party notes every run printed (see quiet_third_party): warning message patterns, info-log prefixes.
QUIET_WARNINGS = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    r"The '\w+' does not have many workers which may be a bottleneck",
    r"The number of training batches \(\d+\) is smaller than the logging interval",
)
QUIET_INFO = ("💡 Tip:", "Trainer already configured with model summary callbacks")


def resolved(cfg: DictConfig) -> dict[str, Any]:
    """The config as a plain, resolved dict, without Hydra's own ``hydra`` node."""
    return {
        str(key): OmegaConf.to_container(cfg[key], resolve=True) if OmegaConf.is_config(cfg[key]) else cfg[key]
        for key in cfg
        if key != "hydra"
    }


def prepare(cfg: DictConfig) -> None:
    """Side effects shared by every run once its config is checked: quiet warnings, print and save the config."""
    extras = cfg.get("extras") or {}
    if extras.get("ignore_warnings"):
        warnings.filterwarnings("ignore")
    else:
        quiet_third_party()
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(resolved(cfg)), output_dir / "config.yaml")
    if extras.get("print_config"):
        print_config_tree(cfg, TREE_ORDER, save_to=output_dir / "config_tree.log")


def quiet_third_party() -> None:
    """Silence the notes Lightning and torch print on every run, and only those (ours and any others stay).

    Each is matched by its message: torch's pytree deprecation (raised inside Lightning), the dataloader
    worker hint (``data.num_workers`` is a choice of the config), the note that an epoch has fewer batches
    than ``log_every_n_steps`` (step logs still come every n steps, across epochs), the LitLogger tip and the
    note that the configured ``RichModelSummary`` replaces Lightning's default one.
    """
    for message in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropMessages) for f in rank_zero.filters):
        rank_zero.addFilter(_DropMessages(QUIET_INFO))


class _DropMessages(logging.Filter):
    """Drop log records whose message starts with one of ``prefixes``."""

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefixes)


def resolve_monitor(cfg: DictConfig) -> tuple[str, str]:
    """The run's one monitored metric and its mode, written into ``cfg`` before anything is printed or saved.

    The top-level ``monitor`` (and ``monitor_mode``) win; else a ``monitor`` set on a callback node (all
    such nodes must agree); else the task's own (its class attributes ``monitor``/``monitor_mode``, e.g.
    ``val/acc``, ``max``). ``monitor``, ``monitor_mode`` and every callback node with a ``monitor`` key
    then hold the resolved value: checkpointing, early stopping, the task's ``<monitor>_best`` and a
    plateau scheduler watch the same metric, and ``metrics.json`` names it.

    Raises:
        ConfigError: callback nodes naming different monitors or modes, a mode other than ``min``/``max``,
            or a monitor whose mode cannot be told (not the task's, not a loss) without ``monitor_mode``.
    """
    if not isinstance(cfg.get("model"), DictConfig) or "_target_" not in cfg.model:
        raise ConfigError("config 'model' is empty: choose one with model=NAME or +experiment=NAME")
    task_class: Any = get_class(str(cfg.model._target_))
    nodes = {f"callbacks.{name}": node for name, node in (cfg.get("callbacks") or {}).items()
             if isinstance(node, DictConfig) and "monitor" in node}

    def chosen(key: str, top: str) -> Any:
        if cfg.get(top) is not None:
            return cfg[top]
        values = {f"{path}.{key}": node[key] for path, node in nodes.items() if node.get(key) is not None}
        if len(set(values.values())) > 1:
            listed = ", ".join(f"{path}={value}" for path, value in values.items())
            raise ConfigError(f"config: callbacks watch different metrics ({listed}); a run has one monitor: set "
                              f"{top}=<value> (it applies to every callback)")
        return next(iter(values.values()), None)

    monitor = chosen("monitor", "monitor") or task_class.monitor
    mode = chosen("mode", "monitor_mode")
    if mode is None:
        if monitor == task_class.monitor:
            mode = task_class.monitor_mode
        elif monitor.endswith("loss"):
            mode = "min"
        else:
            raise ConfigError(f"config 'monitor_mode': monitor={monitor} is not {task_class.__name__}'s own metric "
                              f"({task_class.monitor}); say whether lower or higher is better: monitor_mode=min|max")
    if mode not in ("min", "max"):
        raise ConfigError(f"config 'monitor_mode': expected min or max, got {mode!r}")
    with open_dict(cfg):
        cfg.monitor, cfg.monitor_mode = monitor, mode
    fill_monitor(cfg.get("callbacks"), monitor, mode, replace=True)
    return monitor, mode


def fill_monitor(callbacks_cfg: DictConfig | None, monitor: str, mode: str, replace: bool = False) -> None:
    """Set ``monitor``/``mode`` of callback nodes that say ``monitor: null`` (with ``replace``: of every node
    with a ``monitor`` key) to ``monitor``/``mode``.

    Nodes without a ``monitor`` key (e.g. the ``last_checkpoint`` callback) are left alone.
    """
    for node in (callbacks_cfg or {}).values():
        if isinstance(node, DictConfig) and "monitor" in node and (replace or node.monitor is None):
            with open_dict(node):
                node.monitor = monitor
                if "mode" in node or node._target_.endswith(("ModelCheckpoint", "EarlyStopping")):
                    node.mode = mode


def early_stopping_after_validation(cfg: DictConfig) -> None:
    """Make every ``EarlyStopping`` node check right after a validation (``check_on_train_epoch_end: false``
    where it is unset), written into ``cfg`` so the saved config shows it.

    Lightning's default checks at the end of each training epoch, also when ``max_steps`` or ``max_time`` ends
    an epoch early without validating it: before the first validation that fails ("conditioned on metric
    ``val/acc`` which is not available"), later it counts the previous epoch's value once more.

    Raises:
        ConfigError: ``check_on_train_epoch_end: true`` together with ``trainer.max_steps`` or
            ``trainer.max_time``.
    """
    trainer = cfg.get("trainer") or {}
    limits = [f"trainer.{key}={trainer[key]}" for key in ("max_steps", "max_time")
              if trainer.get(key) not in (None, -1)]
    name: Any  # a DictConfig key
    for name, node in (cfg.get("callbacks") or {}).items():
        if not (isinstance(node, DictConfig) and str(node.get("_target_", "")).endswith("EarlyStopping")):
            continue
        if node.get("check_on_train_epoch_end") is None:
            with open_dict(node):
                node.check_on_train_epoch_end = False
        elif node.check_on_train_epoch_end and limits:
            raise ConfigError(f"callbacks.{name}.check_on_train_epoch_end=true with {' and '.join(limits)}: a run "
                              "that stops in the middle of an epoch skips its validation, and early stopping "
                              "would then check a metric not measured in it; set "
                              f"callbacks.{name}.check_on_train_epoch_end=false (checks after each validation)")


def instantiate_group(cfg: DictConfig | None, group: str) -> list[Any]:
    """Objects of every ``_target_`` node of a group (``callbacks``/``logger``); ``null`` entries skipped."""
    objects = []
    name: Any  # a DictConfig key (str, int, ...): formatted into the dotted path as is
    for name, node in (cfg or {}).items():
        if isinstance(node, DictConfig) and "_target_" in node:
            objects.append(instantiate_node(f"{group}.{name}", node))
    return objects


def backend_used(net: torch.nn.Module) -> str:
    """Comma-joined recurrent backends found in ``net`` (``backend_used`` or ``backend`` attributes)."""
    names = []
    for module in net.modules():
        name = getattr(module, "backend_used", None) or getattr(module, "backend", None)
        if isinstance(name, str) and name not in names:
            names.append(name)
    return ",".join(names) or "none"


def _floats(metrics: dict[str, Any], prefixes: tuple[str, ...]) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        if key.startswith(prefixes):
            out[key] = float(value.item() if isinstance(value, torch.Tensor) else value)
    return out


def check_run(cfg: DictConfig) -> None:
    """Refuse combinations that cannot do what they say, before anything is built.

    Raises:
        ConfigError: ``train=false`` without ``ckpt_path`` (nothing to test); ``trainer.max_time`` with
            ``trainer.min_epochs``/``min_steps`` (Lightning would keep training past the time limit).
    """
    if not cfg.train and cfg.ckpt_path is None:
        raise ConfigError("train=false tests a trained model: give ckpt_path=<checkpoint file> (or ckpt_path=last "
                          "with hydra.run.dir=<run folder>), got ckpt_path=null")
    trainer = cfg.get("trainer") or {}
    max_time = trainer.get("max_time")
    if max_time is not None:
        for key in ("min_epochs", "min_steps"):
            if trainer.get(key):
                raise ConfigError(f"trainer.max_time={max_time} with trainer.{key}={trainer[key]}: Lightning keeps "
                                  f"training past the time limit until {key} is met; set trainer.{key}=null")
    tuned = tune_steps(cfg.get("tune"))
    if tuned and (cfg.ckpt_path is not None or not cfg.train or trainer.get("fast_dev_run")):
        why = "ckpt_path is set (a resumed run keeps its settings)" if cfg.ckpt_path is not None else (
            "train=false" if not cfg.train else "trainer.fast_dev_run is on (Lightning skips its tuner then)")
        raise ConfigError(f"tune={cfg.tune}: tuning runs before a new fit, but {why}; drop tune or start a new run")


def tune_steps(value: Any) -> list[str]:
    """``tune`` as the list of finders to run, in :data:`TUNE_CHOICES` order (``null``: none).

    Raises:
        ConfigError: anything but ``null``, ``lr``, ``batch_size`` or a list of them.
    """
    names = [] if value is None else [value] if isinstance(value, str) else list(value) if OmegaConf.is_list(
        value) or isinstance(value, list) else None
    if names is None or any(name not in TUNE_CHOICES for name in names):
        raise ConfigError(f"config 'tune': expected null, lr, batch_size or [batch_size,lr], got {value!r}")
    return [name for name in TUNE_CHOICES if name in names]


def tune(trainer: L.Trainer, model: SequenceTask, datamodule: SplitDataModule, cfg: DictConfig) -> dict[str, Any]:
    """Run Lightning's batch-size and learning-rate finders (as ``cfg.tune`` says) and use what they find.

    The batch size is found on the datamodule's ``batch_size``, the learning rate on the task's ``lr``
    (the optimizer partial's ``lr``); both are written back into ``cfg`` (``data.batch_size``,
    ``model.optimizer.lr``), so the saved config and the checkpoints record the values trained with.
    ``<run>/tune.json`` keeps the findings (the learning-rate curve too) and ``<run>/lr_find.png`` its plot.

    Returns:
        ``{"batch_size": {"before": 32, "found": 256}, "lr": {"before": 0.003, "found": 0.0012}}`` (the
        finders that ran).
    """
    output_dir = Path(cfg.paths.output_dir)
    found: dict[str, dict[str, Any]] = {}
    max_epochs = trainer.fit_loop.max_epochs
    trainer.fit_loop.max_epochs = -1  # the finders count steps (100 for the lr): a short max_epochs would cut them
    try:
        for name in tune_steps(cfg.tune):
            found[name] = _find(name, trainer, model, datamodule, cfg)
            log.info(f"Tuned {name}: {found[name]['before']} -> {found[name]['found']}")
    finally:
        trainer.fit_loop.max_epochs = max_epochs
    if trainer.is_global_zero:
        (output_dir / "tune.json").write_text(json.dumps(found, indent=2), encoding="utf-8")
        OmegaConf.save(OmegaConf.create(resolved(cfg)), output_dir / "config.yaml")
    return {name: {"before": value["before"], "found": value["found"]} for name, value in found.items()}


def _find(name: str, trainer: L.Trainer, model: SequenceTask, datamodule: SplitDataModule, cfg: DictConfig
          ) -> dict[str, Any]:
    """Run one of Lightning's finders (``name`` in :data:`TUNE_CHOICES`), set what it found, return the record."""
    from lightning.pytorch.tuner import Tuner
    from matplotlib import pyplot
    from matplotlib.figure import Figure

    tuner = Tuner(trainer)
    if name == "batch_size":
        before = datamodule.batch_size
        size = tuner.scale_batch_size(model, datamodule=datamodule, mode="power", batch_arg_name="batch_size")
        if size is None:
            raise RuntimeError("tune=batch_size: Lightning's batch-size finder returned no batch size")
        with open_dict(cfg):
            cfg.data.batch_size = datamodule.batch_size = int(size)
        return {"before": before, "found": int(size)}
    if model.lr is None:
        raise ConfigError("tune=lr: model.optimizer has no lr to tune (the learning-rate finder sets the optimizer "
                          "partial's lr)")
    lr_before = model.lr
    finder = tuner.lr_find(model, datamodule=datamodule, attr_name="lr", update_attr=False)
    suggestion = finder.suggestion() if finder is not None else None
    if finder is None or suggestion is None:
        raise RuntimeError("tune=lr: Lightning's learning-rate finder gave no suggestion (a loss that diverged at "
                           "once, or too few training batches); set model.optimizer.lr yourself")
    model.lr = float(suggestion)
    with open_dict(cfg):
        cfg.model.optimizer.lr = float(suggestion)
    figure = finder.plot(suggest=True)
    if trainer.is_global_zero and isinstance(figure, Figure):
        figure.savefig(Path(cfg.paths.output_dir) / "lr_find.png")
        pyplot.close(figure)
    return {"before": lr_before, "found": float(suggestion), "lrs": list(map(float, finder.results["lr"])),
            "losses": list(map(float, finder.results["loss"]))}


def stop_reason(trainer: L.Trainer) -> dict[str, Any]:
    """Why ``fit`` ended: ``{"reason": ..., "epochs": int, "steps": int, "message": str}``.

    ``reason`` is ``early_stopping`` (with ``monitor``, ``patience``, ``best``), ``max_time``,
    ``max_steps``, ``max_epochs``, ``fast_dev_run`` or ``stopped`` (a callback asked the Trainer to stop).
    """
    done: dict[str, Any] = {"epochs": trainer.current_epoch, "steps": trainer.global_step}
    for callback in trainer.early_stopping_callbacks:
        if callback.stopping_reason is not EarlyStoppingReason.NOT_STOPPED:
            best = float(callback.best_score)
            return {"reason": "early_stopping", **done, "monitor": callback.monitor, "patience": callback.patience,
                    "best": best, "message": f"early stopping: {callback.monitor} did not improve on {best:.6g} for "
                    f"{callback.wait_count} validations (patience {callback.patience}), after epoch "
                    f"{callback.stopped_epoch}" if callback.stopping_reason is EarlyStoppingReason.PATIENCE_EXHAUSTED
                    else f"early stopping: {callback.stopping_reason_message}"}
    timers = [callback for callback in trainer.callbacks if isinstance(callback, Timer)]  # type: ignore[attr-defined]
    for timer in timers:
        left = timer.time_remaining("train")
        if left is not None and left <= 0:
            return {"reason": "max_time", **done,
                    "message": f"max_time reached after {timer.time_elapsed('train'):.1f} s of training"}
    if trainer.fast_dev_run:  # type: ignore[attr-defined]  # set at runtime by Lightning's Trainer setup
        return {"reason": "fast_dev_run", **done, "message": "fast_dev_run: one batch of each stage"}
    if trainer.max_steps != -1 and trainer.global_step >= trainer.max_steps:
        return {"reason": "max_steps", **done, "message": f"max_steps={trainer.max_steps} reached"}
    if trainer.max_epochs is not None and trainer.current_epoch >= trainer.max_epochs:
        return {"reason": "max_epochs", **done, "message": f"max_epochs={trainer.max_epochs} reached"}
    return {"reason": "stopped", **done, "message": "a callback asked the Trainer to stop"}


def remove_unused_run_folder(folder: str | Path, task_name: str, log_dir: str | Path) -> bool:
    """Delete ``folder`` if it holds only what starting a run writes (Hydra's ``.hydra/`` and
    ``<task_name>.log``, ``config.yaml``, ``config_tree.log``): what a command that failed before training
    leaves. A folder with anything else (checkpoints, logs of an earlier run) is kept. Folders above it that
    are left empty go too, up to ``log_dir`` (kept). Returns whether ``folder`` went.
    """
    folder, log_dir = Path(folder).resolve(), Path(log_dir).resolve()
    setup_files = {".hydra", f"{task_name}.log", "config.yaml", "config_tree.log"}
    if not folder.is_dir() or any(path.name not in setup_files for path in folder.iterdir()):
        return False
    shutil.rmtree(folder)
    for parent in folder.parents:  # logs/<task_name>/runs, logs/<task_name>: created for this run
        if parent == log_dir or log_dir not in parent.parents or any(parent.iterdir()):
            break
        parent.rmdir()
    return True


class KeepRunRecord(HydraCallback):
    """A command refused for its config leaves an existing run folder's files as they were.

    Hydra rewrites ``<run>/.hydra/`` (config, overrides) and opens the job log before the task starts, so a
    refused ``ckpt_path=last`` resume with a changed model size would otherwise replace the record of the
    run it refused to continue. Registered in ``configs/hydra/default.yaml``: at the start of a single run
    it keeps the ``.hydra/`` files and the size of each top-level ``*.log`` of an existing folder, and when
    the job failed with a :class:`~seqforge.utils.config.ConfigError` it writes them back (contents and
    modification times; files Hydra added go, logs are cut back). A new folder is left to
    :func:`remove_unused_run_folder`.
    """

    def __init__(self) -> None:
        self.record: dict[Path, tuple[bytes | int, int]] = {}  # path: (contents, or size of a log; mtime_ns)
        self.hydra_dir: Path | None = None

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        folder = Path(str(OmegaConf.select(config, "hydra.run.dir")))
        subdir = OmegaConf.select(config, "hydra.output_subdir")
        self.record, self.hydra_dir = {}, None
        if not folder.is_dir() or subdir is None:
            return
        self.hydra_dir = folder / str(subdir)
        files = [*(p for p in self.hydra_dir.glob("*") if p.is_file()), *folder.glob("*.log")]
        for path in files:
            stat = path.stat()
            kept = stat.st_size if path.suffix == ".log" else path.read_bytes()
            self.record[path] = (kept, stat.st_mtime_ns)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if self.hydra_dir is None or job_return.status != JobStatus.FAILED:
            return
        try:
            job_return.return_value  # noqa: B018  # re-raises the job's exception
        except ConfigError:
            self._restore(self.hydra_dir)
        except Exception:  # noqa: S110  # another failure: the run's folder records it as it is
            pass

    def _restore(self, hydra_dir: Path) -> None:
        for path in hydra_dir.glob("*"):
            if path.is_file() and path not in self.record:
                path.unlink()
        for path, (kept, mtime_ns) in self.record.items():
            if isinstance(kept, bytes):
                path.write_bytes(kept)
            elif path.is_file() and path.stat().st_size > kept:
                with open(path, "r+b") as handle:
                    handle.truncate(kept)
            if path.is_file():
                os.utime(path, ns=(mtime_ns, mtime_ns))


def checkpoint_folders(cfg: DictConfig) -> list[Path]:
    """The folders the configured checkpoint callbacks write to (``<output_dir>/checkpoints`` if none)."""
    folders = {Path(node.dirpath) for node in (cfg.get("callbacks") or {}).values()
               if isinstance(node, DictConfig) and node.get("dirpath")}
    return sorted(folders) or [Path(cfg.paths.output_dir) / "checkpoints"]


def find_last_checkpoint(cfg: DictConfig) -> str:
    """The newest resumable checkpoint of the run: ``last*.ckpt`` or an interrupt's ``on_exception.ckpt``.

    Raises:
        ConfigError: no such file in the run's checkpoint folders (the message names them).
    """
    nodes = [node for node in (cfg.get("callbacks") or {}).values() if isinstance(node, DictConfig)]
    exception_files = {node.get("filename", "on_exception") for node in nodes
                       if str(node.get("_target_", "")).endswith("ExceptionCheckpoint")}
    folders = checkpoint_folders(cfg)
    found = [path for folder in folders for path in folder.glob("*.ckpt")
             if path.name.startswith("last") or path.stem in exception_files]
    if not found:
        names = " or ".join(["last*.ckpt", *sorted(f"{name}.ckpt" for name in exception_files)])
        raise ConfigError(f"ckpt_path=last: no {names} in {', '.join(map(str, folders))}; run the same command "
                          "with the interrupted run's folder (hydra.run.dir=<run folder>) or give a checkpoint path")
    return str(max(found, key=lambda path: path.stat().st_mtime_ns))


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def resume_changes(stored: dict[str, Any], current: dict[str, Any], *, skip_unset: bool = False
                   ) -> dict[str, tuple[Any, Any]]:
    """Settings that differ between the checkpoint's run and this one, ``{key: (old, new)}``, per
    :data:`RESUME_POLICY`. With ``skip_unset``, keys that are ``null`` in ``current`` are not compared (the
    data's recipe fills them later; the full comparison runs again once it has).

    Raises:
        ConfigError: a change the policy refuses (the message names the key and both values).
    """
    old, new = _flat(stored), _flat(current)
    changes = {key: (old.get(key), new.get(key)) for key in sorted(old.keys() | new.keys())
               if old.get(key) != new.get(key) and not (skip_unset and new.get(key) is None)
               and not key.startswith(("paths.", "ckpt_path", "hydra.", "tune"))
               and not (key in ADDED_KEYS and key not in old)}
    for key, (before, after) in changes.items():
        rule = next((action for prefix, action in RESUME_POLICY if key == prefix or key.startswith(prefix)), "apply")
        if rule == "refuse":
            raise ConfigError(f"resume: {key} is {before!r} in the checkpoint's run and {after!r} now; a resumed run "
                              "cannot change it (start a new run, or resume with the old value)")
    return changes


class ApplyResumedSettings(Callback):
    """After Lightning restored a checkpoint, put back the settings of this run that the restore replaced.

    Args:
        optimizer: changed optimizer hyperparameters (``{"lr": 1e-3}``), set on every param group of the
            restored optimizers (a new ``lr`` also becomes the schedulers' base learning rate).
    Early-stopping ``patience`` restored from the checkpoint is set back to the configured value.
    """

    def __init__(self, optimizer: dict[str, Any], callbacks: list[Callback]) -> None:
        self.optimizer = {k: tuple(v) if isinstance(v, list) else v for k, v in optimizer.items()}
        self.patience = [(cb, cb.patience) for cb in callbacks if isinstance(cb, EarlyStopping)]

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group.update(self.optimizer)
                if "lr" in self.optimizer and "initial_lr" in group:
                    group["initial_lr"] = self.optimizer["lr"]
        if "lr" in self.optimizer:
            for config in trainer.lr_scheduler_configs:
                scheduler: Any = config.scheduler
                if hasattr(scheduler, "base_lrs"):
                    scheduler.base_lrs = [self.optimizer["lr"]] * len(scheduler.base_lrs)
        for callback, patience in self.patience:
            callback.patience = patience


def _interrupt(error: BaseException, request: StopRequest) -> BaseException:
    """The exception a signal should surface as: ``KeyboardInterrupt`` for SIGINT, Lightning's
    ``SIGTERMException`` for SIGTERM; any other ``error`` unchanged."""
    if isinstance(error, SIGTERMException) and request.signum == signal.SIGINT:
        return KeyboardInterrupt()
    if type(error) is SystemExit and isinstance(error.__context__, KeyboardInterrupt):
        return error.__context__  # Lightning turns a KeyboardInterrupt into sys.exit(1)
    return error


def _reraise(error: BaseException, caught: BaseException) -> NoReturn:
    """Raise ``error``, chained to ``caught`` when it replaces it."""
    if error is caught:
        raise error
    raise error from caught


def _write_metrics(trainer: L.Trainer, cfg: DictConfig, metrics: dict[str, Any]) -> None:
    if trainer.is_global_zero:
        with open(Path(cfg.paths.output_dir) / "metrics.json", "w", encoding="utf-8") as handle:
            json.dump(metrics, handle, indent=2)
        log.info(f"Metrics: {metrics}")


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit and test the task described by ``cfg``; write and return the run's metrics.

    Returns:
        ``{"val/...": float, "test/...": float, "best_ckpt_path": str, "backend": str, "monitor": str,
        "stopped": {"reason": ..., "epochs": ..., "steps": ..., "message": ...} (see :func:`stop_reason`),
        "status": "completed"}`` (plus ``"recipe"``: the config keys filled from the data, and ``"tuned"``:
        what ``tune`` found, when any); the
        same dict is written to ``<paths.output_dir>/metrics.json`` by the rank-0 process. A test stage
        that fails after a finished fit still writes it, with the fit's
        metrics and ``status`` naming the failure, then re-raises.

    Raises:
        ConfigError: a wrong key or type anywhere in the config, ``train=false`` without ``ckpt_path``,
            ``ckpt_path=last`` without a checkpoint, a resume that changes what the policy refuses (all
            before anything is built).
        SIGTERMException: SIGTERM during fit or test (after ``on_exception.ckpt`` is written, if it trained).
        KeyboardInterrupt: the same for SIGINT (Ctrl-C).
    """
    check_run(cfg)
    check_config(cfg, TrainSchema, CHECKED_GROUPS)
    monitor, monitor_mode = resolve_monitor(cfg)
    early_stopping_after_validation(cfg)
    ckpt_path = find_last_checkpoint(cfg) if cfg.ckpt_path == LAST else cfg.ckpt_path
    stored: dict[str, Any] | None = None
    csv_rows: dict[str, int] = {}  # rows of each metrics.csv the checkpoint's run had written (seqforge.loggers)
    if cfg.train and ckpt_path is not None:
        try:
            checkpoint = read_checkpoint(ckpt_path)
        except (FileNotFoundError, ValueError) as err:
            raise ConfigError(f"ckpt_path={ckpt_path}: {err}") from err
        stored, csv_rows = checkpoint[CHECKPOINT_KEY]["config"], checkpoint.get(CSV_ROWS, {})
        del checkpoint  # the weights are loaded again by Lightning
        resume_changes(stored, resolved(cfg), skip_unset=True)  # refuses before anything is built or written
    prepare(cfg)
    if cfg.seed is not None:
        L.seed_everything(cfg.seed, workers=True)

    log.info(f"Instantiating datamodule <{cfg.data._target_}>")
    datamodule: SplitDataModule = instantiate_node("data", cfg.data)
    try:  # reading the data validates what only the data can tell (a window longer than the sequences ...)
        datamodule.prepare_data()
        datamodule.setup("fit")
    except ValueError as err:
        raise ConfigError(f"config 'data' ({cfg.data._target_}): {err}") from err
    net_kwargs = dict(datamodule.net_kwargs)
    # settings the datamodule derives from the data fill the config keys left null (the config stays the record)
    derived = apply_recipe(cfg, datamodule.recipe()) if hasattr(datamodule, "recipe") else {}
    if derived:
        OmegaConf.save(OmegaConf.create(resolved(cfg)), Path(cfg.paths.output_dir) / "config.yaml")

    log.info(f"Instantiating task <{cfg.model._target_}> with net sizes {net_kwargs}")
    model: SequenceTask = instantiate_node("model", cfg.model, net=net_kwargs)
    try:
        model.set_monitor(monitor, monitor_mode)
    except ValueError as err:
        raise ConfigError(f"config 'monitor': {err}") from err
    if cfg.compile:
        model.net.compile()  # in place: parameter names (and checkpoints) stay the same

    plain = resolved(cfg)
    callbacks: list[Callback] = instantiate_group(cfg.get("callbacks"), "callbacks")
    config_in_checkpoint = ConfigInCheckpoint(plain, net_kwargs)
    callbacks.append(config_in_checkpoint)
    if stored is not None:
        changes = resume_changes(stored, plain)
        if changes:
            listed = ", ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in changes.items())
            log.info(f"Resuming with changed settings: {listed}")
        optimizer = {key.removeprefix("model.optimizer."): new for key, (_, new) in changes.items()
                     if key.startswith("model.optimizer.")}
        callbacks.append(ApplyResumedSettings(optimizer, callbacks))
    loggers: list[Logger] = instantiate_group(cfg.get("logger"), "logger")
    for logger in loggers:
        if isinstance(logger, CSVLogger):
            if ckpt_path is not None:  # the run's own metrics.csv goes on (rows after the checkpoint dropped)
                logger.continue_from(csv_rows.get(logger.metrics_file))
            if not any(isinstance(callback, CSVRowsInCheckpoint) for callback in callbacks):
                callbacks.append(CSVRowsInCheckpoint())
    trainer: L.Trainer = instantiate_node("trainer", cfg.trainer, callbacks=callbacks, logger=loggers or False,
                                          plugins=[AtomicCheckpointIO()])
    tuned = tune(trainer, model, datamodule, cfg) if tune_steps(cfg.get("tune")) else {}
    if tuned:  # the checkpoints and the loggers record the values trained with
        plain = resolved(cfg)
        config_in_checkpoint.config = ConfigInCheckpoint(plain, net_kwargs).config
    for logger in loggers:  # the configured loggers, also under fast_dev_run (which swaps in a dummy)
        logger.log_hyperparams(plain)

    stopped: dict[str, Any] | None = None
    with stop_at_batch_end() as request:
        if cfg.train:
            try:
                trainer.fit(model=model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
            except BaseException as err:
                error = _interrupt(err, request)
                if trainer.is_global_zero and interrupt_exit_code(error) is not None:
                    log.warning(f"Training stopped: interrupted by {type(error).__name__} at epoch "
                                f"{trainer.current_epoch}, step {trainer.global_step}")
                _reraise(error, err)
            stopped = stop_reason(trainer)
            if trainer.is_global_zero:
                log.info(f"Training stopped after {stopped['epochs']} epochs ({stopped['steps']} steps): "
                         f"{stopped['message']}")
        fit_metrics = _floats(trainer.callback_metrics, ("train/", "val/"))
        if stopped is not None and not validated(fit_metrics) and trainer.is_global_zero:
            log.warning(f"No validation ran: training stopped before the first one ({stopped['message']}), so there "
                        f"is no {model.monitor} and no best checkpoint; the test uses the last weights")

        callback = trainer.checkpoint_callback
        best_path = callback.best_model_path if isinstance(callback, ModelCheckpoint) else ""
        if cfg.train and not best_path:
            # fast_dev_run disables checkpointing; keep the weights anyway so the run can be loaded and predicted
            best_path = str(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt")
            trainer.save_checkpoint(best_path, weights_only=False)  # a full checkpoint (optimizer too)
            log.warning(f"No best checkpoint (fast_dev_run or no checkpoint callback); saved the current weights to "
                        f"{best_path}")
        metrics: dict[str, Any] = {**fit_metrics, "best_ckpt_path": best_path, "backend": backend_used(model.net),
                                   "monitor": model.monitor, "status": "completed"}
        if stopped is not None:
            metrics["stopped"] = stopped
        if derived:
            metrics["recipe"] = derived
        if tuned:
            metrics["tuned"] = tuned
        if cfg.test:
            test_ckpt = best_path if cfg.train else ckpt_path
            try:
                trainer.test(model=model, datamodule=datamodule, ckpt_path=test_ckpt, weights_only=True)
            except BaseException as err:
                error = _interrupt(err, request)
                first_line = str(error).splitlines()[0] if str(error) else ""
                metrics["status"] = f"test failed: {type(error).__name__}" + (f": {first_line}" if first_line else "")
                _write_metrics(trainer, cfg, metrics)
                _reraise(error, err)
            metrics.update(_floats(trainer.callback_metrics, ("test/",)))

    # under fast_dev_run Lightning swapped the loggers for a dummy: record the final numbers anyway
    if trainer.fast_dev_run:  # type: ignore[attr-defined]  # set at runtime by Lightning's Trainer setup
        for logger in loggers:
            logger.log_metrics({k: v for k, v in metrics.items() if isinstance(v, float)}, step=0)
            logger.finalize("success")
    _write_metrics(trainer, cfg, metrics)
    return metrics


def validated(metrics: dict[str, Any]) -> bool:
    """Whether ``metrics`` (what :func:`train` returns) hold validation results (``val/...``)."""
    return any(key.startswith("val/") for key in metrics)


def get_metric_value(metrics: dict[str, Any], metric_name: str | None) -> float:
    """The value a sweeper optimizes: ``metric_name`` (or the task's monitor when ``None``) from ``metrics``.

    Raises:
        KeyError: the metric was not logged (the message lists the logged ones, and says so when no
            validation ran).
    """
    name = metric_name or metrics["monitor"]
    if name not in metrics:
        logged = sorted(k for k, v in metrics.items() if isinstance(v, float))
        why = "" if validated(metrics) or "stopped" not in metrics else (
            f"; no validation ran: training stopped before the first one ({metrics['stopped']['message']})")
        raise KeyError(f"optimized_metric {name!r} was not logged; logged metrics: {logged}{why}")
    value = float(metrics[name])
    log.info(f"Optimized metric {name} = {value}")
    return value if math.isfinite(value) else float("nan")
