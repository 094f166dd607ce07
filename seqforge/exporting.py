"""``seqforge.export``: a trained model as one graph that runs without seqforge (ONNX, pt2 or TorchScript).

The classifier, regressor, tagger, forecaster and language model export as one graph
``(x, lengths) -> output`` with a dynamic batch and time axis:

- ``x``: ``(B, T, C)`` float32 features (normalized as in training, see the JSON) or ``(B, T)`` int64 token
  ids; ``lengths``: ``(B,)`` int64 in ``[1, T]``;
- ``output``: classifier ``(B, num_classes)`` logits, regressor ``(B, output_size)``, tagger
  ``(B, T, num_classes)`` logits, forecaster ``(B, horizon, P)`` (``P``: 1 for a point forecast, mean and
  std for ``gaussian``, one per quantile), in scaled units; language model ``(B, T, vocab_size)``
  next-token logits, zero on padded steps.

Beside the file, ``<output>.json`` (the output path with its suffix replaced) holds what a consumer needs to
pre- and post-process: the task, the input and output names and shapes, the vocabularies (``itos``, ids
included), the tokenizer mode, class names, normalization statistics and scalers.

Every recurrent layer exports through its eager loop (whatever its ``backend``), as a ``scan`` over time;
the length checks become checks inside the pt2 graph (ONNX has no assertion operator: lengths outside
``[1, T]`` are not detected there).
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any, ClassVar

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from seqforge.checkpoint import load_from_checkpoint
from seqforge.data.vocab import Vocabulary
from seqforge.layers.masks import length_mask
from seqforge.layers.recurrent import Recurrent
from seqforge.models import Forecaster, LanguageModel, SequenceClassifier, SequenceTagger
from seqforge.utils.config import ConfigError, check_top_level

FORMATS = ("onnx", "pt2", "torchscript")
SINGLE_GRAPH = (SequenceClassifier, SequenceTagger, Forecaster, LanguageModel)
EXAMPLE_BATCH, EXAMPLE_STEPS = 3, 7  # the tracing example; the graphs take any batch and time


class ExportGraph(nn.Module):
    """``(x (B, T[, C]), lengths (B,)) -> output`` of a single-graph model (see the module docstring)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        if isinstance(self.net, LanguageModel):  # causal: a step's logits never see the padding after it
            logits, _ = self.net(x)
            return logits * length_mask(lengths, x.shape[1]).unsqueeze(-1).to(logits.dtype)
        return self.net(x, lengths)


def _unwrap(task_or_net: nn.Module) -> tuple[nn.Module, Any]:
    """``(net, datamodule or None)`` from a task (``task.net``, ``task.datamodule``) or a bare net."""
    net = getattr(task_or_net, "net", task_or_net)
    if not isinstance(net, nn.Module):
        raise TypeError(f"export: task_or_net must be a seqforge task or net (nn.Module), got {type(net).__name__}")
    return net, getattr(task_or_net, "datamodule", None) if net is not task_or_net else None


def _input_spec(net: nn.Module) -> tuple[str, int | None, int | None]:
    """``(dtype name, channels or None, vocab_size or None)`` of the net's ``x``."""
    if isinstance(net, LanguageModel):
        return "int64", None, net.vocab_size
    encoder: Any = net.encoder
    if encoder.embedding is not None:
        return "int64", None, encoder.vocab_size
    return "float32", encoder.input_size, None


def example_inputs(net: nn.Module, batch: int = EXAMPLE_BATCH, steps: int = EXAMPLE_STEPS,
                   seed: int = 0) -> tuple[Tensor, Tensor]:  # fmt: skip
    """A batch ``(x, lengths)`` the net takes, mixed lengths (the first full): tracing example and test data."""
    gen = torch.Generator().manual_seed(seed)
    dtype, channels, vocab = _input_spec(net)
    shortest = max(1, getattr(net, "season", None) or 1)
    steps = max(steps, shortest + 1)
    lengths = torch.randint(shortest, steps + 1, (batch,), generator=gen)
    lengths[0] = steps
    if dtype == "int64":
        assert vocab is not None
        x = torch.randint(Vocabulary.unk_id + 1 if vocab > Vocabulary.unk_id + 1 else 0, vocab, (batch, steps),
                          generator=gen)  # fmt: skip
    else:
        assert channels is not None
        x = torch.randn(batch, steps, channels, generator=gen)
    return x, lengths


def _metadata(net: nn.Module, datamodule: Any, task: nn.Module, fmt: str, path: Path) -> dict[str, Any]:
    dtype, channels, vocab_size = _input_spec(net)
    x_shape: list[Any] = ["batch", "time"] + ([channels] if channels is not None else [])
    if isinstance(net, SequenceClassifier):
        out_shape: list[Any] = ["batch", net.num_classes or net.output_size]
    elif isinstance(net, SequenceTagger):
        out_shape = ["batch", "time", net.num_classes]
    elif isinstance(net, Forecaster):
        out_shape = ["batch", net.horizon, net.num_params]
    else:
        out_shape = ["batch", "time", vocab_size]
    meta: dict[str, Any] = {
        "file": path.name, "format": fmt, "task": type(task).__name__, "net": type(net).__name__,
        "inputs": [{"name": "x", "dtype": dtype, "shape": x_shape},
                   {"name": "lengths", "dtype": "int64", "shape": ["batch"], "range": [1, "time"]}],
        "outputs": [{"name": "output", "dtype": "float32", "shape": out_shape}],
    }  # fmt: skip
    if isinstance(net, Forecaster):
        meta["forecast"] = {"horizon": net.horizon, "head": net.head_kind, "quantiles": getattr(net, "quantiles", None),
                            "season": net.season, "units": "scaled (apply scaler.inverse: x * scale + shift, "
                            "then exp for log_standard)"}  # fmt: skip
    if datamodule is not None:
        for name in ("vocab", "src_vocab", "tgt_vocab"):
            vocab = getattr(datamodule, name, None)
            if isinstance(vocab, Vocabulary):
                meta[name] = {"itos": vocab.itos, "pad_id": vocab.pad_id, "bos_id": vocab.bos_id,
                              "eos_id": vocab.eos_id, "unk_id": vocab.unk_id}  # fmt: skip
        for name in ("tokenize", "tgt_tokenize"):
            if isinstance(getattr(datamodule, name, None), str):
                meta[name] = getattr(datamodule, name)
        state = datamodule.state_dict() if hasattr(datamodule, "state_dict") else {}
        for key in ("classes", "mean", "std", "scaler"):
            if key in state:
                meta[key] = state[key]
        if "mean" in meta:
            meta["normalize"] = "x = (raw - mean) / std per channel"
    return meta


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"export: format must be one of {FORMATS}, got {fmt!r}")


def _check_path(path: str | Path) -> Path:
    out = Path(path)
    if not out.parent.is_dir():
        raise ValueError(f"export: output path {str(out)!r} is in a folder that does not exist ({str(out.parent)!r})")
    if out.suffix == ".json":
        raise ValueError(f"export: output path {str(out)!r} ends in .json, the name of the metadata beside it")
    return out


def _cells(net: nn.Module) -> list[str]:
    return sorted({m.cell_name for m in net.modules() if isinstance(m, Recurrent)})


def export(task_or_net: nn.Module, path: str | Path, format: str = "onnx") -> Path:
    """Write ``task_or_net`` (a task from :func:`seqforge.load_from_checkpoint`, or a net) to ``path`` as one
    graph ``(x, lengths) -> output`` with dynamic batch and time, and ``path`` with suffix ``.json`` beside it
    (vocabularies, scalers, class names, shapes). Returns the path of the graph.

    Args:
        format: ``"onnx"`` (run with onnxruntime; needs the ``export`` extra), ``"pt2"`` (``torch.export``;
            load with ``torch.export.load(path).module()``) or ``"torchscript"`` (``torch.jit.load``).

    Raises:
        ValueError: unknown ``format``, a folder of ``path`` that does not exist, a model kind without a
            single graph (seq2seq, conditional generation), or a model that cannot be traced (naming its cells).
    """
    _check_format(format)
    out = _check_path(path)
    net, datamodule = _unwrap(task_or_net)
    if not isinstance(net, SINGLE_GRAPH):
        kinds = ", ".join(cls.__name__ for cls in SINGLE_GRAPH)
        raise ValueError(f"export: task_or_net is a {type(net).__name__}; exported as one graph are {kinds} "
                         f"(seq2seq and conditional generators decode step by step: use seqforge.predict.predict)")
    graph = ExportGraph(copy.deepcopy(net)).eval()
    example = example_inputs(net)
    try:
        _write(graph, example, out, format)
    except Exception as err:  # tracing errors come from deep inside torch; say what to change
        reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        if format == "torchscript":
            hint = "torch.jit.script cannot compile this model; use format='pt2' or format='onnx'"
        else:
            hint = (f"its cells are {_cells(net)}; the built-in cells (lstm, gru, rnn, with layer_norm, dropout, "
                    "zoneout) and every backend export (the layers export through their eager loop)")
        raise ValueError(f"export: format={format!r} could not export {type(net).__name__} ({reason}); {hint}") from err
    meta = _metadata(net, datamodule, task_or_net, format, out)
    out.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return out


def _write(graph: ExportGraph, example: tuple[Tensor, Tensor], out: Path, fmt: str) -> None:
    if fmt == "torchscript":
        torch.jit.save(torch.jit.script(graph), str(out))
        return
    batch, time = torch.export.Dim("batch"), torch.export.Dim("time")
    dynamic = {"x": {0: batch, 1: time}, "lengths": {0: batch}}
    if fmt == "pt2":
        torch.export.save(torch.export.export(graph, example, dynamic_shapes=dynamic), str(out))
        return
    program = torch.onnx.export(graph, example, dynamic_shapes=dynamic, input_names=["x", "lengths"],
                                output_names=["output"], verbose=False)  # fmt: skip
    assert program is not None
    program.save(str(out), external_data=False)


@dataclasses.dataclass
class ExportSchema:
    """Types of the top-level keys of ``export.yaml``."""

    config_name: ClassVar[str] = "export"
    task_name: str
    ckpt_path: str
    allow_targets: list[str]
    format: str
    output: str


def export_from_config(cfg: DictConfig) -> Path:
    """Run :func:`export` as ``configs/export.yaml`` describes; returns the path of the graph."""
    for key in ("ckpt_path", "output"):
        if OmegaConf.is_missing(cfg, key) or not cfg[key]:
            raise ConfigError(f"config '{key}': export needs it: scripts/export.py ckpt_path=PATH format=onnx "
                              "output=PATH")
    check_top_level(cfg, ExportSchema)
    for key, check in (("format", _check_format), ("output", _check_path)):  # before the checkpoint is read
        try:
            check(cfg[key])
        except ValueError as err:
            raise ConfigError(f"config '{key}': {err}") from None
    task = load_from_checkpoint(cfg.ckpt_path, allow=tuple(cfg.allow_targets))
    return export(task, cfg.output, format=cfg.format)
