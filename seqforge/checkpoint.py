"""Checkpoints that rebuild themselves: the run's config rides inside, as plain data.

``train()`` adds :class:`ConfigInCheckpoint` to the callbacks, so every checkpoint holds
``checkpoint["seqforge"] = {"config", "net_kwargs", "datamodule_state"}``: the resolved model and data
configs, the data-dependent net sizes, and the datamodule's fitted state (vocabularies, scalers).
:func:`load_from_checkpoint` reads it back with ``torch.load(weights_only=True)``, so loading never
unpickles arbitrary objects, and instantiates only what the allowlist names (:func:`check_stored_config`):
the stored config is checked whole before anything is imported or called.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterator, Sequence
from typing import Any

import lightning as L
import torch
from hydra._internal.utils import _locate
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from seqforge.utils.config import ConfigError, check_node, instantiate_node

CHECKPOINT_KEY = "seqforge"
# Lightning stores these as arbitrary Python objects (optimizer partials, OmegaConf types); we keep a
# plain-data copy so the whole checkpoint loads with weights_only=True.
_OBJECT_KEYS = ("hyper_parameters", "datamodule_hyper_parameters")
_TYPE_KEYS = ("hparams_type", "datamodule_hparams_type")
# What a checkpoint's stored config may instantiate: classes defined under these packages, and the
# Lightning classes configs/ name (the stored trainer/callbacks/logger nodes are not instantiated by
# load_from_checkpoint; a tool that rebuilds them gets no more than what we ship).
ALLOWED_TARGETS = (
    "seqforge.",
    "torch.nn.",
    "torch.optim.",  # optimizers and torch.optim.lr_scheduler
    "lightning.pytorch.callbacks.EarlyStopping",
    "lightning.pytorch.callbacks.LearningRateMonitor",
    "lightning.pytorch.callbacks.ModelCheckpoint",
    "lightning.pytorch.callbacks.RichModelSummary",
    "lightning.pytorch.callbacks.RichProgressBar",
    "lightning.pytorch.callbacks.Timer",
    "lightning.pytorch.loggers.CSVLogger",
    "lightning.pytorch.loggers.MLFlowLogger",
    "lightning.pytorch.loggers.TensorBoardLogger",
    "lightning.pytorch.loggers.WandbLogger",
    "lightning.pytorch.profilers.SimpleProfiler",
    "lightning.pytorch.strategies.DDPStrategy",
    "lightning.pytorch.trainer.Trainer",
)


_MAX_MISMATCHES = 20  # lines of a state_dict mismatch shown (each key with both shapes)


class UnsafeCheckpointError(ValueError):
    """A checkpoint's stored config names something it may not instantiate; nothing was imported or called."""


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


def _matches(name: str, prefixes: Sequence[str]) -> bool:
    """``name`` is one of ``prefixes`` or lies under one (``"a.b"`` covers ``a.b`` and ``a.b.*``, not ``a.bc``)."""
    return any(name == p.rstrip(".") or name.startswith(p if p.endswith(".") else p + ".") for p in prefixes)


_PLAIN = (str, int, float, bool, type(None), torch.Tensor)


def _items(node: Any, path: str) -> Iterator[tuple[str, Any, Any]]:
    """``(path, key, value)`` of every dict entry and list (or tuple) item under ``node``, depth first.

    Raises:
        UnsafeCheckpointError: a value that is not plain data (a set, a custom container ...).
    """
    if isinstance(node, dict):
        entries: Iterator[tuple[Any, Any]] = iter(node.items())
    elif isinstance(node, list | tuple):
        entries = enumerate(node)
    elif isinstance(node, _PLAIN):
        return
    else:
        raise UnsafeCheckpointError(f"config '{path}': a {type(node).__name__} value; a checkpoint stores plain data")
    for key, value in entries:
        where = f"{path}.{key}" if isinstance(node, dict) else f"{path}[{key}]"
        yield where, key, value
        yield from _items(value, where)


def _check_target(where: str, name: Any, prefixes: Sequence[str], allow: Sequence[str]) -> None:
    how = ("pass allow=('mypkg.cells.',) to load_from_checkpoint, or allow_targets=[mypkg.cells.] to "
           "scripts/eval.py / scripts/predict.py, only for code you trust")
    if not isinstance(name, str):
        raise UnsafeCheckpointError(f"config '{where}': _target_ must be a dotted class name, got {name!r}")
    parts = name.split(".")
    if len(parts) < 2 or not all(part.isidentifier() and not part.startswith("_") for part in parts):
        raise UnsafeCheckpointError(f"config '{where}': _target_ {name!r} is not a public dotted class name "
                                    "(private or dunder parts are refused)")
    if not _matches(name, prefixes):
        allowed = ", ".join([p for p in ALLOWED_TARGETS if p.endswith(".")] + list(allow))
        raise UnsafeCheckpointError(f"config '{where}': _target_ {name!r} is not allowed in a checkpoint (allowed: "
                                    f"{allowed} and the Lightning classes configs/ use); it was not imported. "
                                    f"To trust it, {how}")
    try:
        target = _locate(name)  # instantiate's own lookup (get_object's, without its error log)
    except (ImportError, AttributeError, ValueError) as err:
        raise UnsafeCheckpointError(f"config '{where}': cannot import _target_ {name!r} "
                                    f"({str(err).splitlines()[-1]})") from None
    if not inspect.isclass(target):
        raise UnsafeCheckpointError(f"config '{where}': _target_ {name!r} is a {type(target).__name__}, not a "
                                    "class; a checkpoint may only name classes")
    defined = f"{target.__module__}.{target.__qualname__}"
    if name not in {p.rstrip(".") for p in prefixes} and not _matches(defined, prefixes):
        raise UnsafeCheckpointError(f"config '{where}': _target_ {name!r} is {defined}, which is not allowed "
                                    f"in a checkpoint. To trust it, {how}")


def check_stored_config(node: Any, path: str, allow: Sequence[str] = ()) -> None:
    """Refuse a stored config that would make Hydra import or call anything outside the allowlist.

    Walks the plain-data tree ``node`` (dicts and lists, ``_args_`` and ``_partial_`` nodes included)
    BEFORE anything is imported: every ``_target_`` must be a public dotted name under
    :data:`ALLOWED_TARGETS` or ``allow``, and only then is it imported and required to be a class; a
    name found under a prefix (not listed exactly) must be a class defined under an allowed prefix too,
    so ``seqforge.checkpoint.os.system`` is refused. Strings holding ``${`` are refused too: a saved
    config is resolved, and a resolver such as ``oc.create`` builds a hidden ``_target_`` node at
    instantiation time, after any walk of the data.

    Args:
        node: the stored config (``checkpoint["seqforge"]["config"]["model"]`` ...), plain data.
        path: its name in messages (``"model"``).
        allow: more trusted names, e.g. ``("mypkg.cells.",)``. An entry covers itself and the names under
            it (``"mypkg.cells"`` and ``"mypkg.cells."`` both cover ``mypkg.cells.MyCell``, not
            ``mypkg.cellsx.X``); a class found under it must also be defined (its ``__module__``) under
            an allowed entry, not merely imported there.

    Raises:
        UnsafeCheckpointError: naming the config path and the target.
    """
    for entry in allow:
        if not isinstance(entry, str) or not entry.strip(".") or not all(
            part.isidentifier() for part in entry.rstrip(".").split(".")
        ):
            raise ValueError(f"allow: expected dotted module or class names such as 'mypkg.cells.', got {entry!r}")
    prefixes = (*ALLOWED_TARGETS, *allow)
    for where, key, value in _items(node, path):
        for text in (key, value):
            if isinstance(text, str) and "${" in text:
                raise UnsafeCheckpointError(f"config '{where}': {text!r} holds an interpolation; a checkpoint "
                                            "stores a resolved config, so this one was crafted or damaged")
        if key == "_target_":
            _check_target(where, value, prefixes, allow)


def read_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint dict at ``path`` (loaded with ``weights_only=True``) and check it is seqforge's.

    Raises:
        FileNotFoundError / IsADirectoryError: nothing, or a folder, at ``path``.
        ValueError: an empty (0-byte), unreadable or corrupt file, or a checkpoint not written by
            ``seqforge.train``.
    """
    if os.path.isdir(path):
        raise IsADirectoryError(f"load_from_checkpoint: {str(path)!r} is a directory; give a .ckpt file in it")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"load_from_checkpoint: no checkpoint file at {str(path)!r}")
    if os.path.getsize(path) == 0:
        raise ValueError(f"load_from_checkpoint: {str(path)!r} is empty (0 bytes), not a readable checkpoint: "
                         "an interrupted or failed write (a full disk?); use another checkpoint of the run")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        first = (str(err).splitlines() or ["no message"])[0][:200]
        raise ValueError(f"load_from_checkpoint: {str(path)!r} is not a readable checkpoint "
                         f"({type(err).__name__}: {first})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"load_from_checkpoint: {str(path)!r} holds no 'state_dict'; not a Lightning checkpoint")
    if CHECKPOINT_KEY not in checkpoint:
        raise ValueError(f"load_from_checkpoint: {str(path)!r} has no '{CHECKPOINT_KEY}' entry; only checkpoints "
                         "written by seqforge's train() carry the config needed to rebuild the model")
    return checkpoint


# model.net keys of checkpoints written before models took one recurrent spec (model.net.rnn)
_FLAT_RNN_KEYS = ("cell", "hidden_size", "num_layers", "bidirectional", "encoder_bidirectional", "dropout", "backend",
                  "layer_norm", "rnn_options")


def check_checkpoint_config(checkpoint: dict[str, Any], allow: Sequence[str] = ()) -> None:
    """Check what :func:`load_from_checkpoint` instantiates (stored ``model``, ``data``, ``net_kwargs``).

    Raises:
        UnsafeCheckpointError: see :func:`check_stored_config`.
        ValueError: the stored entry lacks the ``model`` or ``data`` node, or its ``model.net`` has the flat
            recurrent keys of checkpoints written before ``model.net.rnn``.
    """
    stored = checkpoint[CHECKPOINT_KEY]
    config = stored.get("config") if isinstance(stored, dict) else None
    if not isinstance(config, dict) or not all(isinstance(config.get(key), dict) for key in ("model", "data")):
        raise ValueError(f"load_from_checkpoint: the '{CHECKPOINT_KEY}' entry holds no 'model' and 'data' configs")
    check_stored_config(config["model"], "model", allow)
    check_stored_config(config["data"], "data", allow)
    check_stored_config(stored.get("net_kwargs", {}), "net_kwargs", allow)
    net = config["model"].get("net")
    flat = [key for key in _FLAT_RNN_KEYS if isinstance(net, dict) and key in net]
    if flat:
        raise ValueError(f"load_from_checkpoint: this checkpoint was written before models took one recurrent spec: "
                         f"its model.net holds {flat}, which now live under model.net.rnn (encoder_bidirectional is "
                         f"rnn.bidirectional, rnn_options are rnn.recurrent_dropout/zoneout/...); retrain the model "
                         f"with this version of seqforge")


def build_datamodule(checkpoint: dict[str, Any], allow: Sequence[str] = ()) -> L.LightningDataModule:
    """The datamodule of a checkpoint's run with its fitted state restored (no data are read).

    ``allow``: more trusted ``_target_`` prefixes (see :func:`check_stored_config`).

    Raises:
        UnsafeCheckpointError: the stored data config names something outside the allowlist.
    """
    stored = checkpoint[CHECKPOINT_KEY]
    check_stored_config(stored["config"]["data"], "data", allow)
    datamodule = instantiate(OmegaConf.create(stored["config"]["data"]))
    if stored["datamodule_state"]:
        datamodule.load_state_dict(stored["datamodule_state"])
    return datamodule


def _differences(stored: Any, given: Any, path: str) -> list[str]:
    """``path=given (checkpoint: stored)`` for each leaf where two plain configs differ."""
    if isinstance(stored, dict) and isinstance(given, dict):
        return [line for key in dict.fromkeys([*stored, *given])
                for line in _differences(stored.get(key), given.get(key), f"{path}.{key}")]
    return [] if stored == given else [f"{path}={given} (checkpoint: {stored})"]


def _brief(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def datamodule_for(
    checkpoint: dict[str, Any], data_cfg: DictConfig | None = None, allow: Sequence[str] = ()
) -> L.LightningDataModule:
    """The set-up datamodule to test a checkpoint on, holding the checkpoint's fitted state, checked to fit.

    ``data_cfg`` with a ``_target_`` replaces the stored data config; without one (``+data.name=GunPoint``)
    its keys override the stored config's; ``None`` keeps the stored config. The datamodule always gets
    the checkpoint's fitted state (class names, normalization, vocabularies, scalers), whatever its
    class, so the net reads data encoded as in training. Then, naming the data keys that differ from the
    checkpoint's (``data.name=GunPoint (checkpoint: JapaneseVowels)``):

    - the datamodule must keep that kind of state (same keys);
    - the data must fit it: the datamodule's ``setup`` refuses, e.g., another number of channels than the
      stored normalization or labels outside the stored classes;
    - after ``setup`` the state must still be the stored one, key by key;
    - ``net_kwargs`` (input size, classes, vocabulary sizes, horizon ...) must equal the stored ones.

    Raises:
        ConfigError: the data do not fit the checkpoint (both sides named).
        UnsafeCheckpointError: the stored data config names a target outside the allowlist.
    """
    stored = checkpoint[CHECKPOINT_KEY]
    if data_cfg is not None and "_target_" in data_cfg:
        config = data_cfg
    else:
        check_stored_config(stored["config"]["data"], "data", allow)
        config = OmegaConf.create(stored["config"]["data"])
        config.merge_with(data_cfg or {})
        check_node("data", config)
    given = OmegaConf.to_container(config, resolve=True)
    differs = "; ".join(_differences(stored["config"]["data"], given, "data")) or "the checkpoint's own data config"

    def mismatch(detail: str) -> ConfigError:
        return ConfigError(f"config 'data': the checkpoint does not fit these data: {detail} [data: {differs}]")

    datamodule = instantiate_node("data", config)
    state, kind = stored["datamodule_state"], type(datamodule).__name__
    if state:
        try:
            datamodule.load_state_dict(state)
        except (KeyError, TypeError, ValueError, NotImplementedError) as err:
            raise mismatch(f"the checkpoint's fitted data state has keys {sorted(state)}; {kind} cannot take "
                           f"it ({type(err).__name__}: {err})") from None
    try:
        datamodule.prepare_data()
        datamodule.setup("test")
    except ValueError as err:
        raise mismatch(str(err)) from err
    now = to_plain(datamodule.state_dict())
    for key in dict.fromkeys([*state, *now]):
        if state.get(key) != now.get(key):
            raise mismatch(f"fitted data state '{key}' is {_brief(state.get(key))} in the checkpoint, "
                           f"{_brief(now.get(key))} in {kind}")
    sizes = dict(datamodule.net_kwargs)
    for key in dict.fromkeys([*stored["net_kwargs"], *sizes]):
        if stored["net_kwargs"].get(key) != sizes.get(key):
            raise mismatch(f"the checkpoint's net was built for {key}={stored['net_kwargs'].get(key)}, "
                           f"{kind} gives {key}={sizes.get(key)}")
    return datamodule


def load_from_checkpoint(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu", allow: Sequence[str] = ()
) -> L.LightningModule:
    """Rebuild the task (LightningModule with its net) saved at ``path``, without the training config.

    The task and net are instantiated from the config stored in the checkpoint, the weights loaded
    strictly, and the datamodule (vocabularies, scalers; no data read) attached as ``task.datamodule``
    for encoding inputs and decoding outputs. The task is returned in eval mode on ``map_location``.

    Only classes under :data:`ALLOWED_TARGETS` (seqforge, torch.nn, torch.optim, Lightning's callbacks,
    loggers, profilers, strategies and Trainer) are instantiated; the stored config is checked before
    anything is imported. A model built with your own classes loads with ``allow``, e.g.
    ``allow=("mypkg.cells.",)`` (prefixes of the modules that define them; trust only your own code).

    Example::

        task = seqforge.load_from_checkpoint("logs/train/runs/.../checkpoints/last.ckpt")
        logits = task.net(x, lengths)

    Raises:
        FileNotFoundError: nothing at ``path``.
        UnsafeCheckpointError: the stored config names a target outside the allowlist (nothing imported).
        ValueError: unreadable file, not a seqforge checkpoint, or weights that do not fit the stored model.
    """
    checkpoint = read_checkpoint(path, map_location)
    try:
        check_checkpoint_config(checkpoint, allow)
    except UnsafeCheckpointError as err:
        raise UnsafeCheckpointError(f"load_from_checkpoint: {str(path)!r}: {err}") from None
    stored = checkpoint[CHECKPOINT_KEY]
    model_cfg = OmegaConf.create(stored["config"]["model"])
    task = instantiate(model_cfg, net=stored["net_kwargs"])
    try:
        task.load_state_dict(checkpoint["state_dict"], strict=True)
    except RuntimeError as err:
        details = [line.strip() for line in str(err).splitlines()[1:] if line.strip()]
        shown = details[:_MAX_MISMATCHES] + ([f"... and {len(details) - _MAX_MISMATCHES} more"]
                                             if len(details) > _MAX_MISMATCHES else [])
        raise ValueError(f"load_from_checkpoint: the weights in {str(path)!r} do not fit the stored model "
                         f"{model_cfg.get('_target_')}:\n  " + "\n  ".join(shown)) from None
    task.datamodule = build_datamodule(checkpoint, allow)
    return task.to(map_location).eval()
