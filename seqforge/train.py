"""Train a task from a Hydra config: ``train(cfg)`` is what ``scripts/train.py`` runs.

The flow is a straight list: check the config, seed, build the datamodule and read its ``net_kwargs``
(data-dependent sizes such as ``input_size`` or ``vocab_size``) and its ``recipe()`` if it has one (settings
derived from the data, filled into the config keys left ``null``), build the task with those merged into
``model.net``, build callbacks, loggers and trainer, fit, test with the best checkpoint, write
``metrics.json`` into the run folder.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf, open_dict

from seqforge.checkpoint import ConfigInCheckpoint
from seqforge.data.recipes import apply_recipe
from seqforge.utils.config import ConfigError, TrainSchema, check_config, instantiate_node, print_config_tree

if TYPE_CHECKING:
    from seqforge.data.base import SplitDataModule
    from seqforge.tasks.base import SequenceTask

log = logging.getLogger(__name__)

TREE_ORDER = ("data", "model", "callbacks", "logger", "trainer", "paths", "extras")
CHECKED_GROUPS = ("data", "model", "trainer", "callbacks", "logger")


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


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit and test the task described by ``cfg``; write and return the run's metrics.

    Returns:
        ``{"val/...": float, "test/...": float, "best_ckpt_path": str, "backend": str, "monitor": str}``
        (plus ``"recipe"``: the config keys filled from the data, when any);
        the same dict is written to ``<paths.output_dir>/metrics.json`` by the rank-0 process.

    Raises:
        ConfigError: a wrong key or type anywhere in the config (before anything is built).
    """
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
    if cfg.compile:
        model.net.compile()  # in place: parameter names (and checkpoints) stay the same

    fill_monitor(cfg.get("callbacks"), model.monitor, model.monitor_mode)
    plain = resolved(cfg)
    callbacks: list[Callback] = instantiate_group(cfg.get("callbacks"), "callbacks")
    callbacks.append(ConfigInCheckpoint(plain, net_kwargs))
    loggers: list[Logger] = instantiate_group(cfg.get("logger"), "logger")
    trainer: L.Trainer = instantiate_node("trainer", cfg.trainer, callbacks=callbacks, logger=loggers or False)
    for logger in loggers:  # the configured loggers, also under fast_dev_run (which swaps in a dummy)
        logger.log_hyperparams(plain)

    if cfg.train:
        trainer.fit(model=model, datamodule=datamodule, ckpt_path=cfg.ckpt_path, weights_only=True)
    fit_metrics = _floats(trainer.callback_metrics, ("train/", "val/"))

    callback = trainer.checkpoint_callback
    best_path = callback.best_model_path if isinstance(callback, ModelCheckpoint) else ""
    test_metrics: dict[str, float] = {}
    if cfg.test:
        if cfg.train and not best_path:
            log.warning("No best checkpoint (fast_dev_run or no checkpoint callback); testing the current weights")
        test_ckpt = (best_path or None) if cfg.train else cfg.ckpt_path
        trainer.test(model=model, datamodule=datamodule, ckpt_path=test_ckpt, weights_only=True)
        test_metrics = _floats(trainer.callback_metrics, ("test/",))
    if cfg.train and not best_path:
        # fast_dev_run disables checkpointing; keep the weights anyway so the run can be loaded and predicted
        best_path = str(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt")
        trainer.save_checkpoint(best_path, weights_only=False)  # a full checkpoint (optimizer too)

    metrics: dict[str, Any] = {**fit_metrics, **test_metrics}
    metrics.update(best_ckpt_path=best_path, backend=backend_used(model.net), monitor=model.monitor)
    if derived:
        metrics["recipe"] = derived
    # under fast_dev_run Lightning swapped the loggers for a dummy: record the final numbers anyway
    if trainer.fast_dev_run:  # type: ignore[attr-defined]  # set at runtime by Lightning's Trainer setup
        for logger in loggers:
            logger.log_metrics({k: v for k, v in metrics.items() if isinstance(v, float)}, step=0)
            logger.finalize("success")
    if trainer.is_global_zero:
        with open(Path(cfg.paths.output_dir) / "metrics.json", "w", encoding="utf-8") as handle:
            json.dump(metrics, handle, indent=2)
        log.info(f"Metrics: {metrics}")
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
