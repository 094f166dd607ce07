"""Config checks that run before any training, node-named instantiation, and the rich config tree.

A wrong key or a wrong type fails here with the key named, instead of deep inside Lightning after the data
have been loaded:

- the top-level keys (``seed``, ``train``, ``ckpt_path`` ...) are merged into a typed schema;
- every node with a ``_target_`` (data, model, model.net, trainer, callbacks.*, logger.*) is compared with
  the target's signature: unknown keys are refused (with a suggestion), and values whose annotation is
  plain (``int``, ``float``, ``bool``, ``str``, ``None``, ``Literal[...]``) are type-checked.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import types
import typing
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional

import rich.syntax
import rich.tree
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException
from rich.console import Console

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
_HYDRA_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}
_PLAIN = (int, float, bool, str, type(None))


class ConfigError(ValueError):
    """A config value or key that cannot work; the message names the key."""


# Value ranges of top-level keys, checked with their types (``seed_everything`` takes what numpy takes).
SEED = {"range": (0, 2**32 - 1)}


@dataclasses.dataclass
class TrainSchema:
    """Types of the top-level keys of ``train.yaml`` (other keys are groups checked node by node)."""

    config_name: ClassVar[str] = "train"
    task_name: str
    tags: list[str]
    train: bool
    test: bool
    ckpt_path: Optional[str]  # noqa: UP045 (OmegaConf structured configs need typing.Optional)
    seed: Optional[int] = dataclasses.field(metadata=SEED)  # noqa: UP045
    compile: bool
    optimized_metric: Optional[str]  # noqa: UP045


@dataclasses.dataclass
class EvalSchema:
    """Types of the top-level keys of ``eval.yaml``."""

    config_name: ClassVar[str] = "eval"
    task_name: str
    tags: list[str]
    ckpt_path: str
    allow_targets: list[str]
    seed: Optional[int] = dataclasses.field(metadata=SEED)  # noqa: UP045


@dataclasses.dataclass
class PredictSchema:
    """Types of the top-level keys of ``predict.yaml``."""

    config_name: ClassVar[str] = "predict"
    task_name: str
    ckpt_path: str
    allow_targets: list[str]
    input: Optional[str]  # noqa: UP045
    input_file: Optional[str]  # noqa: UP045
    output_file: Optional[str]  # noqa: UP045
    input_column: Optional[str]  # noqa: UP045
    max_len: Optional[int]  # noqa: UP045
    temperature: float
    num_samples: int
    batch_size: int
    device: str
    progress: bool
    seed: Optional[int] = dataclasses.field(metadata=SEED)  # noqa: UP045


def _known_top_level(schema: type) -> set[str]:
    """Top-level keys a config may hold: the schema's, the primary YAML's own, the config groups, ``hydra``."""
    primary = OmegaConf.load(CONFIG_DIR / f"{schema.config_name}.yaml")  # type: ignore[attr-defined]
    groups = {p.name for p in CONFIG_DIR.iterdir() if p.is_dir()}
    return {f.name for f in dataclasses.fields(schema)} | set(primary) | groups | {"hydra"}


def check_top_level(cfg: DictConfig, schema: type) -> None:
    """Merge the top-level keys named by the dataclass ``schema`` into it; a wrong type names the key.

    Also refused, naming the key: a top-level key that is neither in the schema, nor in the primary YAML
    (``configs/<schema.config_name>.yaml``), nor a config group (``++seedd=3``: did you mean 'seed'?), and
    a value outside a field's ``metadata["range"]`` (``seed=-1``).
    """
    names = [f.name for f in dataclasses.fields(schema)]
    missing = [name for name in names if name not in cfg]
    if missing:
        raise ConfigError(f"config: missing top-level keys {missing}")
    known = _known_top_level(schema)
    key: Any  # a DictConfig key (str, int, ...): formatted into messages as is
    for key in cfg:
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"top-level keys: {sorted(names)}"
            raise ConfigError(f"config '{key}': unknown top-level key; {hint}")
    try:
        OmegaConf.merge(OmegaConf.structured(schema), {name: cfg[name] for name in names})
    except OmegaConfBaseException as err:
        raise ConfigError(f"config key '{err.full_key}': {err.msg}") from None
    for field in dataclasses.fields(schema):
        low, high = field.metadata.get("range", (None, None))
        value = cfg[field.name]
        if low is not None and isinstance(value, int) and not low <= value <= high:
            raise ConfigError(f"config '{field.name}': expected an int in [{low}, {high}], got {value}")


def _walk_targets(node: Any, path: str) -> Iterator[tuple[str, DictConfig]]:
    """Every dict node with a ``_target_`` inside ``node`` (itself included), with its dotted path."""
    if not isinstance(node, DictConfig):
        return
    if "_target_" in node:
        yield path, node
    key: Any  # a DictConfig key (str, int, ...): formatted into the dotted path as is
    for key in node:
        if not OmegaConf.is_missing(node, key):
            yield from _walk_targets(node[key], f"{path}.{key}")


def locate(dotted: str) -> Any:
    """The object named by a dotted path (``package.module.Name``), importing the longest module prefix."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError as err:
            if err.name is None or not ".".join(parts[:cut]).startswith(err.name):
                raise
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(f"no module named {parts[0]!r}")


def _signature(target: Any) -> inspect.Signature | None:
    try:
        return inspect.signature(target)
    except (TypeError, ValueError):
        return None


def _hints(target: Any) -> dict[str, Any]:
    function = target.__init__ if inspect.isclass(target) else target
    try:
        return typing.get_type_hints(function)
    except Exception:  # unresolvable forward references: no type checks for this target
        return {}


def _allowed(hint: Any) -> tuple[set[type], set[Any]] | None:
    """Plain types and literal values a hint allows, or ``None`` when it admits anything richer."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        kinds: set[type] = set()
        values: set[Any] = set()
        for arg in typing.get_args(hint):
            if arg is torch.Tensor:  # a YAML value is never a tensor: check the plain alternatives
                continue
            part = _allowed(arg)
            if part is None:
                return None
            kinds |= part[0]
            values |= part[1]
        return kinds, values
    if origin is Literal:
        return set(), set(typing.get_args(hint))
    if hint in _PLAIN:
        return {hint}, set()
    return None


def _type_ok(value: Any, kinds: set[type], values: set[Any]) -> bool:
    if isinstance(value, bool):
        return bool in kinds or any(value is v for v in values)
    if isinstance(value, int) and (int in kinds or float in kinds):
        return True
    if isinstance(value, float | str) and type(value) in kinds:
        return True
    return any(value == v and type(value) is type(v) for v in values)


def _describe(kinds: set[type], values: set[Any]) -> str:
    names = sorted("None" if k is type(None) else k.__name__ for k in kinds)
    return " or ".join(names + ([f"one of {sorted(map(repr, values))}"] if values else []))


def check_node(path: str, node: DictConfig) -> None:
    """Check one ``_target_`` node's keys (and plain-typed values) against the target's signature."""
    target_name = node["_target_"]
    try:
        target = locate(str(target_name))
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"config '{path}': cannot import _target_ {target_name!r} ({err})") from None
    signature = _signature(target)
    if signature is None:
        return
    params = signature.parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    hints = _hints(target)
    key: Any  # a DictConfig key (str, int, ...): formatted into messages as is
    for key in node:
        if key in _HYDRA_KEYS:
            continue
        if key not in params:
            if takes_any:
                continue
            close = difflib.get_close_matches(str(key), list(params), n=1)
            nested = [f"{name}.{key}" for name in params
                      if isinstance(node.get(name), DictConfig) and key in node[name]]  # fmt: skip
            close = nested or close  # a key that moved into a nested node (model.net.hidden_size -> rnn.hidden_size)
            hint = f"; did you mean '{close[0]}'?" if close else f"; accepted: {sorted(params)}"
            raise ConfigError(f"config '{path}.{key}': unknown key for {target_name}{hint}")
        if OmegaConf.is_missing(node, key) or key not in hints:
            continue
        value = node[key]
        allowed = _allowed(hints[key])
        if value is None or OmegaConf.is_config(value) or allowed is None:
            continue
        if not _type_ok(value, *allowed):
            raise ConfigError(f"config '{path}.{key}': expected {_describe(*allowed)} for {target_name}, "
                              f"got {type(value).__name__} {value!r}")
    if inspect.isclass(target) and issubclass(target, (torch.optim.Optimizer, *_SCHEDULERS)):
        _dry_run(path, node, target)


_SCHEDULERS = (torch.optim.lr_scheduler.LRScheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)


def _build_on_dummy(target: Any, kwargs: dict[str, Any]) -> None:
    """``target`` (an optimizer or an lr scheduler) built over one throwaway parameter."""
    params = [torch.nn.Parameter(torch.zeros(1))]
    if issubclass(target, torch.optim.Optimizer):
        target(params, **kwargs)
    else:
        target(torch.optim.SGD(params, lr=0.1), **kwargs)


def _dry_run(path: str, node: DictConfig, target: type) -> None:
    """Build an optimizer or scheduler node now, so torch's own value checks (``lr >= 0``, betas in [0, 1),
    a plateau ``factor < 1`` ...) fail before the data are read, naming the key they refuse.

    Only torch's ``ValueError`` counts: other failures (a missing argument filled at run time, nested
    nodes) are left to the run.
    """
    if any(OmegaConf.is_missing(node, key) for key in node):
        return
    plain = OmegaConf.to_container(node, resolve=True)
    assert isinstance(plain, dict)
    kwargs = {str(k): v for k, v in plain.items() if k not in _HYDRA_KEYS}
    try:
        _build_on_dummy(target, kwargs)
    except ValueError as err:
        for key in kwargs:  # the key whose removal (its default) makes torch accept the rest
            try:
                _build_on_dummy(target, {k: v for k, v in kwargs.items() if k != key})
            except (TypeError, ValueError):
                continue
            raise ConfigError(f"config '{path}.{key}': {node['_target_']} refuses {key}={kwargs[key]!r} "
                              f"({err})") from None
        raise ConfigError(f"config '{path}': {node['_target_']} refuses {kwargs} ({err})") from None
    except Exception:  # arguments filled at run time, nested nodes ...: the run reports those
        return


def check_config(cfg: DictConfig, schema: type, groups: Sequence[str]) -> None:
    """Check the top-level keys against ``schema`` and every ``_target_`` node under ``groups``.

    Raises:
        ConfigError: naming the first wrong key.
    """
    check_top_level(cfg, schema)
    for group in groups:
        if group in cfg and cfg[group] is not None:
            for path, node in _walk_targets(cfg[group], group):
                check_node(path, node)
    check_gradient_clipping(cfg)


def check_gradient_clipping(cfg: DictConfig) -> None:
    """Refuse ``trainer.gradient_clip_val`` with a task that clips gradients itself.

    A task taking a ``gradient_clip_val`` argument (the truncated-BPTT language model) optimizes manually,
    and Lightning refuses Trainer clipping under manual optimization, but only once fit starts.
    """
    trainer, model = cfg.get("trainer"), cfg.get("model")
    if not isinstance(trainer, DictConfig) or not isinstance(model, DictConfig) or "_target_" not in model:
        return
    clip = trainer.get("gradient_clip_val")
    if clip is None or clip == 0:
        return
    signature = _signature(locate(str(model._target_)))
    if signature is not None and "gradient_clip_val" in signature.parameters:
        raise ConfigError(f"config 'trainer.gradient_clip_val': {model._target_} optimizes manually and clips "
                          f"gradients itself; set trainer.gradient_clip_val=null model.gradient_clip_val={clip} "
                          "(Lightning refuses Trainer clipping under manual optimization)")


def instantiate_node(path: str, node: DictConfig, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` whose errors name the config node they came from.

    ``kwargs`` merge into the node (``net={"input_size": 12}`` fills the nested ``net`` node).
    """
    if node is None:
        raise ConfigError(f"config '{path}' is empty: choose one with {path}=NAME or +experiment=NAME")
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        raise ConfigError(f"config '{path}': {err}") from err


def print_config_tree(cfg: DictConfig, order: Sequence[str], save_to: str | Path | None = None) -> None:
    """Print the resolved config as a rich tree (groups in ``order`` first) and optionally save it."""
    tree = rich.tree.Tree("CONFIG", style="dim", guide_style="dim")
    keys = [k for k in order if k in cfg] + [k for k in cfg if k not in order and k != "hydra"]
    for key in keys:
        branch = tree.add(str(key), style="bold", guide_style="dim")
        value = cfg[key]
        text = OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(value)
        branch.add(rich.syntax.Syntax(text, "yaml"))
    Console().print(tree)
    if save_to is not None:
        with open(save_to, "w", encoding="utf-8") as handle:
            Console(file=handle, width=110, color_system=None).print(tree)


def compose_config(
    config_name: str = "train", overrides: Sequence[str] = (), output_dir: str | Path | None = None
) -> DictConfig:
    """Compose ``configs/<config_name>.yaml`` with ``overrides`` outside ``@hydra.main`` (notebooks, tests).

    With ``output_dir``, the run folder and ``paths.log_dir`` point there, so the config can be passed
    straight to :func:`seqforge.train.train`.

    Example::

        cfg = compose_config("train", ["+experiment=ucr_lstm", "debug=fdr"], output_dir="/tmp/run")
        metrics = train(cfg)
    """
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name, overrides=list(overrides), return_hydra_config=True)
    if output_dir is not None:
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(output_dir)
            cfg.paths.output_dir = str(output_dir)
            cfg.paths.log_dir = str(output_dir)
    HydraConfig.instance().set_config(cfg)
    return cfg
