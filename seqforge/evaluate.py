"""Evaluate a checkpoint on a test set: ``evaluate(cfg)`` is what ``scripts/eval.py`` runs.

The task and net come from the checkpoint alone (see :mod:`seqforge.checkpoint`); the data config is the
checkpoint's unless ``cfg.data`` names another one, which then gets the checkpoint's fitted state and must
fit the net (:func:`seqforge.checkpoint.datamodule_for`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

from seqforge.checkpoint import datamodule_for, load_from_checkpoint, read_checkpoint
from seqforge.train import instantiate_group, quiet_third_party
from seqforge.utils.config import ConfigError, EvalSchema, check_config, instantiate_node

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Test the checkpoint ``cfg.ckpt_path``; write and return ``{"test/...": float, "ckpt_path": str}``.

    Raises:
        ConfigError: a wrong key or type in the config, no ``ckpt_path`` given, or data that do not fit the
            checkpoint (channels, classes, vocabularies, scalers, net sizes; both sides named).
        FileNotFoundError / ValueError: a missing, unreadable or foreign checkpoint.
    """
    if OmegaConf.is_missing(cfg, "ckpt_path") or not cfg.ckpt_path:
        raise ConfigError("config 'ckpt_path': evaluate needs a checkpoint: scripts/eval.py ckpt_path=PATH")
    check_config(cfg, EvalSchema, ("data", "trainer", "logger"))
    quiet_third_party()
    if cfg.seed is not None:
        L.seed_everything(cfg.seed, workers=True)
    task = load_from_checkpoint(cfg.ckpt_path, allow=tuple(cfg.allow_targets))
    checkpoint = read_checkpoint(cfg.ckpt_path)
    try:
        datamodule = datamodule_for(checkpoint, cfg.get("data"), allow=tuple(cfg.allow_targets))
    except ConfigError as err:
        raise ConfigError(f"{err} [checkpoint: {cfg.ckpt_path}]") from err

    loggers = instantiate_group(cfg.get("logger"), "logger")
    trainer: L.Trainer = instantiate_node("trainer", cfg.trainer, logger=loggers or False, callbacks=[])
    trainer.test(model=task, datamodule=datamodule)
    metrics: dict[str, Any] = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
    metrics["ckpt_path"] = str(cfg.ckpt_path)
    if trainer.is_global_zero:
        Path(cfg.paths.output_dir).mkdir(parents=True, exist_ok=True)
        with open(Path(cfg.paths.output_dir) / "metrics.json", "w", encoding="utf-8") as handle:
            json.dump(metrics, handle, indent=2)
        log.info(f"Metrics: {metrics}")
    return metrics
