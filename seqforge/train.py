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
import signal
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf, open_dict

from seqforge.callbacks import AtomicCheckpointIO, StopRequest, stop_at_batch_end
from seqforge.checkpoint import CHECKPOINT_KEY, ConfigInCheckpoint, read_checkpoint
from seqforge.data.recipes import apply_recipe
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
)
LAST = "last"


def resolved(cfg: DictConfig) -> dict[str, Any]:
    """The config as a plain, resolved dict, without Hydra's own ``hydra`` node."""
    return {
        str(key): OmegaConf.to_container(cfg[key], resolve=True) if OmegaConf.is_config(cfg[key]) else cfg[key]
        for key in cfg
        if key != "hydra"
    }


def prepare(cfg: DictConfig) -> None:
    """Checks and side effects shared by every run: validate, quiet warnings, print and save the config."""
    check_config(cfg, TrainSchema, CHECKED_GROUPS)
    extras = cfg.get("extras") or {}
    if extras.get("ignore_warnings"):
        warnings.filterwarnings("ignore")
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(resolved(cfg)), output_dir / "config.yaml")
    if extras.get("print_config"):
        print_config_tree(cfg, TREE_ORDER, save_to=output_dir / "config_tree.log")


def fill_monitor(callbacks_cfg: DictConfig | None, monitor: str, mode: str) -> None:
    """Set ``monitor``/``mode`` of callback nodes that say ``monitor: null`` to the task's own metric.

    Nodes without a ``monitor`` key (e.g. the ``last_checkpoint`` callback) are left alone.
    """
    for node in (callbacks_cfg or {}).values():
        if isinstance(node, DictConfig) and "monitor" in node and node.monitor is None:
            with open_dict(node):
                node.monitor = monitor
                if "mode" in node or node._target_.endswith(("ModelCheckpoint", "EarlyStopping")):
                    node.mode = mode


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
               and not key.startswith(("paths.", "ckpt_path", "hydra."))}
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
        "status": "completed"}`` (plus ``"recipe"``: the config keys filled from the data, when any); the
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
    prepare(cfg)
    ckpt_path = find_last_checkpoint(cfg) if cfg.ckpt_path == LAST else cfg.ckpt_path
    stored: dict[str, Any] | None = None
    if cfg.train and ckpt_path is not None:
        try:
            stored = read_checkpoint(ckpt_path)[CHECKPOINT_KEY]["config"]
        except (FileNotFoundError, ValueError) as err:
            raise ConfigError(f"ckpt_path={ckpt_path}: {err}") from err
        resume_changes(stored, resolved(cfg), skip_unset=True)  # refuses before anything is built
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
    if cfg.compile:
        model.net.compile()  # in place: parameter names (and checkpoints) stay the same

    fill_monitor(cfg.get("callbacks"), model.monitor, model.monitor_mode)
    plain = resolved(cfg)
    callbacks: list[Callback] = instantiate_group(cfg.get("callbacks"), "callbacks")
    callbacks.append(ConfigInCheckpoint(plain, net_kwargs))
    if stored is not None:
        changes = resume_changes(stored, plain)
        if changes:
            listed = ", ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in changes.items())
            log.info(f"Resuming with changed settings: {listed}")
        optimizer = {key.removeprefix("model.optimizer."): new for key, (_, new) in changes.items()
                     if key.startswith("model.optimizer.")}
        callbacks.append(ApplyResumedSettings(optimizer, callbacks))
    loggers: list[Logger] = instantiate_group(cfg.get("logger"), "logger")
    trainer: L.Trainer = instantiate_node("trainer", cfg.trainer, callbacks=callbacks, logger=loggers or False,
                                          plugins=[AtomicCheckpointIO()])
    for logger in loggers:  # the configured loggers, also under fast_dev_run (which swaps in a dummy)
        logger.log_hyperparams(plain)

    with stop_at_batch_end() as request:
        if cfg.train:
            try:
                trainer.fit(model=model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
            except BaseException as err:
                _reraise(_interrupt(err, request), err)
        fit_metrics = _floats(trainer.callback_metrics, ("train/", "val/"))

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
        if derived:
            metrics["recipe"] = derived
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


def get_metric_value(metrics: dict[str, Any], metric_name: str | None) -> float:
    """The value a sweeper optimizes: ``metric_name`` (or the task's monitor when ``None``) from ``metrics``.

    Raises:
        KeyError: the metric was not logged (the message lists the logged ones).
    """
    name = metric_name or metrics["monitor"]
    if name not in metrics:
        logged = sorted(k for k, v in metrics.items() if isinstance(v, float))
        raise KeyError(f"optimized_metric {name!r} was not logged; logged metrics: {logged}")
    value = float(metrics[name])
    log.info(f"Optimized metric {name} = {value}")
    return value if math.isfinite(value) else float("nan")
