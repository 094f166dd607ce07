"""Checkpoints that rebuild themselves: the run's config rides inside, as plain data.

``train()`` adds :class:`ConfigInCheckpoint` to the callbacks, so every checkpoint holds
``checkpoint["seqforge"] = {"config", "net_kwargs", "datamodule_state"}``: the resolved model and data
configs, the data-dependent net sizes, and the datamodule's fitted state (vocabularies, scalers).
:func:`load_from_checkpoint` reads it back with ``torch.load(weights_only=True)``, so loading never
unpickles arbitrary objects.
"""

from __future__ import annotations

import os
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

CHECKPOINT_KEY = "seqforge"
# Lightning stores these as arbitrary Python objects (optimizer partials, OmegaConf types); we keep a
# plain-data copy so the whole checkpoint loads with weights_only=True.
_OBJECT_KEYS = ("hyper_parameters", "datamodule_hyper_parameters")
_TYPE_KEYS = ("hparams_type", "datamodule_hparams_type")


def to_plain(value: Any) -> Any:
    """``value`` as plain data: dicts, lists, numbers, strings, tensors; any other object becomes its repr."""
    if isinstance(value, dict) or OmegaConf.is_dict(value):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple) or OmegaConf.is_list(value):
        return [to_plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str | torch.Tensor):
        return value
    return repr(value)


class ConfigInCheckpoint(L.Callback):
    """Store the run's config, net sizes and datamodule state in every checkpoint.

    Args:
        config: resolved config as a plain dict; needs the ``model`` and ``data`` nodes.
        net_kwargs: the datamodule's ``net_kwargs`` merged into ``model.net``.
    """

    def __init__(self, config: dict[str, Any], net_kwargs: dict[str, Any]) -> None:
        missing = [key for key in ("model", "data") if not isinstance(config.get(key), dict)]
        if missing:
            raise ValueError(f"ConfigInCheckpoint: config needs the nodes {missing} as dicts")
        self.config = to_plain(config)
        self.net_kwargs = to_plain(net_kwargs)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        datamodule = trainer.datamodule  # type: ignore[attr-defined]  # set at runtime by Lightning's data connector
        state = datamodule.state_dict() if datamodule is not None else {}
        checkpoint[CHECKPOINT_KEY] = {
            "config": self.config,
            "net_kwargs": self.net_kwargs,
            "datamodule_state": to_plain(state),
        }
        for key in _OBJECT_KEYS:
            if key in checkpoint:
                checkpoint[key] = to_plain(checkpoint[key])
        for key in _TYPE_KEYS:
            checkpoint.pop(key, None)


def read_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint dict at ``path`` (loaded with ``weights_only=True``) and check it is seqforge's.

    Raises:
        FileNotFoundError: nothing at ``path``.
        ValueError: unreadable or corrupt file, or a checkpoint not written by ``seqforge.train``.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"load_from_checkpoint: no checkpoint file at {str(path)!r}")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise ValueError(f"load_from_checkpoint: {str(path)!r} is not a readable checkpoint "
                         f"({type(err).__name__}: {str(err).splitlines()[0][:200]})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"load_from_checkpoint: {str(path)!r} holds no 'state_dict'; not a Lightning checkpoint")
    if CHECKPOINT_KEY not in checkpoint:
        raise ValueError(f"load_from_checkpoint: {str(path)!r} has no '{CHECKPOINT_KEY}' entry; only checkpoints "
                         "written by seqforge's train() carry the config needed to rebuild the model")
    return checkpoint


def build_datamodule(checkpoint: dict[str, Any]) -> L.LightningDataModule:
    """The datamodule of a checkpoint's run with its fitted state restored (no data are read)."""
    stored = checkpoint[CHECKPOINT_KEY]
    datamodule = instantiate(OmegaConf.create(stored["config"]["data"]))
    if stored["datamodule_state"]:
        datamodule.load_state_dict(stored["datamodule_state"])
    return datamodule


def load_from_checkpoint(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> L.LightningModule:
    """Rebuild the task (LightningModule with its net) saved at ``path``, without the training config.

    The task and net are instantiated from the config stored in the checkpoint, the weights loaded
    strictly, and the datamodule (vocabularies, scalers; no data read) attached as ``task.datamodule``
    for encoding inputs and decoding outputs. The task is returned in eval mode on ``map_location``.

    Example::

        task = seqforge.load_from_checkpoint("logs/train/runs/.../checkpoints/last.ckpt")
        logits = task.net(x, lengths)

    Raises:
        FileNotFoundError: nothing at ``path``.
        ValueError: unreadable file, not a seqforge checkpoint, or weights that do not fit the stored model.
    """
    checkpoint = read_checkpoint(path, map_location)
    stored = checkpoint[CHECKPOINT_KEY]
    model_cfg = OmegaConf.create(stored["config"]["model"])
    task = instantiate(model_cfg, net=stored["net_kwargs"])
    try:
        task.load_state_dict(checkpoint["state_dict"], strict=True)
    except RuntimeError as err:
        raise ValueError(f"load_from_checkpoint: the weights in {str(path)!r} do not fit the stored model "
                         f"{model_cfg.get('_target_')} ({str(err).splitlines()[0]})") from None
    task.datamodule = build_datamodule(checkpoint)
    return task.to(map_location).eval()
