"""``seqforge.export``: a trained model as graphs that run without seqforge (ONNX or pt2).

The classifier, regressor, tagger, forecaster and language model export as one graph
``(x, lengths) -> output`` with a dynamic batch and time axis:

- ``x``: ``(B, T, C)`` float32 features (normalized as in training, see the JSON) or ``(B, T)`` int64 token
  ids; ``lengths``: ``(B,)`` int64 in ``[1, T]``;
- a forecaster over many series (built with ``future_size`` or ``static_cardinalities``, as
  :class:`seqforge.data.panel.PanelDataModule` builds it) also takes, by name, those it reads:
  ``future`` ``(B, horizon, future_size)`` float32 known-future covariates and ``static`` ``(B, S)`` int64
  category ids (:func:`context_names`; the JSON's ``series`` entry says how to encode them);
- ``output``: classifier ``(B, num_classes)`` logits, regressor ``(B, output_size)``, tagger
  ``(B, T, num_classes)`` logits, forecaster ``(B, horizon, P)`` (``P``: 1 for a point forecast, mean and
  variance for ``gaussian``, one per quantile), in scaled units; language model ``(B, T, vocab_size)``
  next-token logits, zero on padded steps.

``Seq2Seq`` and ``ConditionalGenerator`` export as an encoder graph (source or condition -> the decoder's
initial state, a tuple of named tensors) and a one-step decoder graph ``(previous, state) -> (logits or
values, next state[, attention])`` (:class:`Seq2SeqStepGraph`, :class:`GeneratorStepGraph`); the consumer
runs the decoding loop, feeding each ``<name>_next`` output back as the ``<name>`` input.

Beside the graphs, ``<output>.json`` (the output path with its suffix replaced) holds what a consumer needs
to pre- and post-process: the task, every graph's input and output names, dtypes and shapes, the
vocabularies (``itos``, ids included), the tokenizer mode, class names, normalization statistics, scalers,
and for the decoders the start/end/pad ids, what to carry between steps and the default ``max_len``.

Every recurrent layer exports through its eager loop (whatever its ``backend``), as a ``scan`` over time.
A length outside ``[1, T]`` (or a ``static`` id outside ``[0, cardinality)``): pt2 keeps the model's check
as an assertion in the graph (the program raises); ONNX has no assertion operator, so the ONNX graph runs on
values clamped into range and sets that row of every output to NaN (:class:`ExportGraph`,
:class:`Seq2SeqEncoderGraph`); the JSON says so under ``out_of_range``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any, ClassVar, cast

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from seqforge.cells.base import as_state, state_tensors
from seqforge.checkpoint import load_from_checkpoint
from seqforge.data.panel import PanelDataModule
from seqforge.data.vocab import Vocabulary
from seqforge.layers.masks import check_length_range, length_mask
from seqforge.layers.recurrent import Recurrent
from seqforge.models import (
    ConditionalGenerator,
    Forecaster,
    LanguageModel,
    Seq2Seq,
    SequenceClassifier,
    SequenceTagger,
)
from seqforge.utils.config import ConfigError, check_top_level

FORMATS = ("onnx", "pt2")
SINGLE_GRAPH = (SequenceClassifier, SequenceTagger, Forecaster, LanguageModel)
TWO_GRAPHS = (Seq2Seq, ConditionalGenerator)  # an encoder graph and a one-step decoder graph
BAD_LENGTHS = {  # what a graph does with a length outside [1, T] (in the metadata beside it)
    "onnx": "that row of every output is NaN, the other rows are unaffected (ONNX has no assertion operator)",
    "pt2": "the program raises RuntimeError 'lengths must lie in [1, T]' (an assertion in the graph)",
}
BAD_STATIC = {  # the same for a static id outside [0, cardinality) of its column
    "onnx": BAD_LENGTHS["onnx"],
    "pt2": "the program raises RuntimeError 'static ids must lie in [0, cardinality)' (an assertion in the graph)",
}
EXAMPLE_BATCH, EXAMPLE_STEPS = 3, 7  # the tracing example; the graphs take any batch and time


def clamp_lengths(lengths: Tensor, steps: int) -> tuple[Tensor, Tensor]:
    """``(lengths clamped to [1, steps], valid (B,) bool)``: what an ONNX graph runs on, and the rows it then
    sets to NaN with :func:`mark_bad_rows` (ONNX has no assertion operator)."""
    valid = (lengths >= 1) & (lengths <= steps)
    return lengths.clamp(min=1, max=steps), valid


def mark_bad_rows(value: Tensor, valid: Tensor, batch_dim: int = 0) -> Tensor:
    """``value`` with the rows (along ``batch_dim``) where ``valid`` is False set to NaN."""
    shape = [1] * value.dim()
    shape[batch_dim] = -1
    return torch.where(valid.view(shape), value, torch.full_like(value, float("nan")))


def context_names(net: nn.Module) -> list[str]:
    """The graph inputs of ``net`` after ``(x, lengths)``, passed by name: a :class:`Forecaster`'s ``future``
    (when built with ``future_size > 0``) and ``static`` (with ``static_cardinalities``); none for other nets."""
    if not isinstance(net, Forecaster):
        return []
    return [name for name, used in (("future", net.future_size > 0), ("static", len(net.static_embeddings) > 0))
            if used]  # fmt: skip


def clamp_static(static: Tensor, net: Forecaster) -> tuple[Tensor, Tensor]:
    """``(static ids clamped to [0, cardinality) per column, valid (B,) bool)``, as :func:`clamp_lengths`."""
    top = torch.tensor(net.static_cardinalities, device=static.device) - 1  # (S,)
    valid = ((static >= 0) & (static <= top)).all(1)
    return torch.minimum(static.clamp(min=0), top), valid


class ExportGraph(nn.Module):
    """``(x (B, T[, C]), lengths (B,)[, future=, static=]) -> output`` of a single-graph model (see the module
    docstring); ``future`` and ``static`` only for a forecaster that reads them (:func:`context_names`).

    ``nan_for_bad_lengths``: instead of the model's length (and static id) check, which pt2 keeps as an
    assertion in the graph, a row whose length lies outside ``[1, T]`` (or whose static id lies outside its
    column's ``[0, cardinality)``) comes out all NaN and the other rows are unaffected: how the ONNX graph
    (no assertion operator) reports it.
    """

    def __init__(self, net: nn.Module, nan_for_bad_lengths: bool = False) -> None:
        super().__init__()
        self.net = net
        self.nan_for_bad_lengths = nan_for_bad_lengths

    def forward(self, x: Tensor, lengths: Tensor, future: Tensor | None = None, static: Tensor | None = None) -> Tensor:
        valid: Tensor | None = None
        if self.nan_for_bad_lengths:
            lengths, valid = clamp_lengths(lengths, x.shape[1])
            if static is not None and isinstance(self.net, Forecaster) and len(self.net.static_embeddings):
                static, valid_static = clamp_static(static, self.net)
                valid = valid & valid_static
        if isinstance(self.net, Forecaster):  # the net checks the context it reads (and refuses the rest)
            out = self.net(x, lengths, future=future, static=static)
        elif future is not None or static is not None:
            raise ValueError(f"ExportGraph: future and static are forecaster inputs; {type(self.net).__name__} "
                             "takes (x, lengths)")
        elif isinstance(self.net, LanguageModel):  # causal: a step's logits never see the padding after it
            check_length_range(type(self.net).__name__, lengths, x.shape[1])  # the net itself takes no lengths
            logits, _ = self.net(x)
            out = logits * length_mask(lengths, x.shape[1]).unsqueeze(-1).to(logits.dtype)
        else:
            out = self.net(x, lengths)
        return out if valid is None else mark_bad_rows(out, valid)


# ------------------------------------------------------------------ seq2seq and conditional generation
ATTENTION_STATE = ("keys", "values", "mask", "feed")  # Seq2Seq.encode's attention entries, in graph order


def hidden_names(decoder: Recurrent) -> list[str]:
    """Names of the decoder's state tensors in the graphs: ``h`` (RNN/GRU), ``h, c`` (LSTM), ``state_k`` beyond."""
    count = len(state_tensors(decoder.init_state(1)))
    return ["h", "c"][:count] if count <= 2 else [f"state_{k}" for k in range(count)]


class Seq2SeqEncoderGraph(nn.Module):
    """``(src (B, S) int64, src_lengths (B,)) -> state``: :meth:`Seq2Seq.encode` as a tuple, the decoder's
    ``h`` [``c``] ``(L, B, H)``, then with attention ``keys (B, S, H')``, ``values (B, S, H)``, ``mask (B, S)``
    bool (``True`` on source tokens) and ``feed (B, H)`` (the input-feeding vector, zeros).

    ``nan_for_bad_lengths`` as :class:`ExportGraph`: a row whose length lies outside ``[1, S]`` gets NaN in
    every float state tensor (so its logits are NaN at every step)."""

    def __init__(self, net: Seq2Seq, nan_for_bad_lengths: bool = False) -> None:
        super().__init__()
        self.net = net
        self.nan_for_bad_lengths = nan_for_bad_lengths

    def forward(self, src: Tensor, src_lengths: Tensor) -> tuple[Tensor, ...]:
        valid: Tensor | None = None
        if self.nan_for_bad_lengths:
            src_lengths, valid = clamp_lengths(src_lengths, src.shape[1])
        state = self.net.encode(src, src_lengths)
        hidden = state_tensors(state["hidden"])
        attention = [state[k] for k in ATTENTION_STATE if k in state]
        if valid is not None:
            hidden = tuple(mark_bad_rows(h, valid, batch_dim=1) for h in hidden)
            attention = [a if a.dtype == torch.bool else mark_bad_rows(a, valid) for a in attention]
        return (*hidden, *attention)


class Seq2SeqStepGraph(nn.Module):
    """``(previous (B,) int64, state) -> (logits (B, V), h_next [, c_next][, feed_next, attn (B, S)])``: one
    :meth:`Seq2Seq.decode_step`; ``state`` is the encoder graph's output with the carried parts replaced by the
    previous step's ``*_next`` (``keys``, ``values`` and ``mask`` stay the encoder's)."""

    def __init__(self, net: Seq2Seq) -> None:
        super().__init__()
        self.net = net
        self.num_hidden = len(hidden_names(net.decoder))

    def forward(self, previous: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        hidden = as_state(list(state[: self.num_hidden]), self.net.decoder.state_is_tensor)
        full = {"hidden": hidden, "attn": None, **dict(zip(ATTENTION_STATE, state[self.num_hidden :]))}
        logits, new = self.net.decode_step(previous, full)
        attention = (new["feed"], new["attn"]) if self.net.attention_kind != "none" else ()
        return (logits, *state_tensors(new["hidden"]), *attention)


class GeneratorEncoderGraph(nn.Module):
    """``cond (B,) int64 class ids or (B, cond_size) float32 -> (cond_vector (B, C), h [, c] (L, B, H))``: the
    encoded condition and the decoder's initial state."""

    def __init__(self, net: ConditionalGenerator) -> None:
        super().__init__()
        self.net = net

    def forward(self, cond: Tensor) -> tuple[Tensor, ...]:
        c = self.net.encode_condition(cond)
        return (c, *state_tensors(self.net.initial_state(c)))


class GeneratorStepGraph(nn.Module):
    """``(previous, (cond_vector, h [, c])) -> (logits (B, V) | mean (B, F) [, variance (B, F)], h_next [, c_next])``:
    one :meth:`ConditionalGenerator.decode_step`; ``previous`` is ``(B,)`` token ids (BOS first) or ``(B, F)``
    values (zeros first)."""

    def __init__(self, net: ConditionalGenerator) -> None:
        super().__init__()
        self.net = net

    def forward(self, previous: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        hidden = as_state(list(state[1:]), self.net.rnn.state_is_tensor)
        y, new = self.net.decode_step(previous, {"cond": state[0], "hidden": hidden})
        return (*(y if isinstance(y, tuple) else (y,)), *state_tensors(new["hidden"]))


@dataclasses.dataclass
class StepGraphs:
    """The two graphs of a decoder model, their example inputs, dynamic axes and names (see :func:`step_graphs`)."""

    encoder: nn.Module
    step: nn.Module
    encoder_inputs: tuple[Tensor, ...]
    encoder_axes: dict[str, dict[int, str]]  # input name -> {dim: axis name}
    state_axes: dict[str, dict[int, str]]  # state tensor name -> {dim: axis name}
    previous: Tensor  # the first step's input (start tokens or zero values)
    previous_axes: dict[int, str]
    outputs: list[str]  # the step's outputs before the carried state
    carried: list[str]  # the state the step returns updated, as <name>_next
    extra: list[str]  # the step's outputs after the carried state

    @property
    def state(self) -> list[str]:
        return list(self.state_axes)


def step_graphs(net: Seq2Seq | ConditionalGenerator, batch: int = EXAMPLE_BATCH, steps: int = EXAMPLE_STEPS,
                seed: int = 0, nan_for_bad_lengths: bool = False) -> StepGraphs:  # fmt: skip
    """The encoder and one-step decoder graphs of ``net`` with their example inputs (mixed source lengths);
    ``nan_for_bad_lengths`` as :class:`Seq2SeqEncoderGraph`."""
    if isinstance(net, Seq2Seq):
        hidden = hidden_names(net.decoder)
        attention = net.attention_kind != "none"
        axes = {name: {1: "batch"} for name in hidden}
        if attention:
            axes.update(keys={0: "batch", 1: "src_time"}, values={0: "batch", 1: "src_time"},
                        mask={0: "batch", 1: "src_time"}, feed={0: "batch"})  # fmt: skip
        return StepGraphs(
            Seq2SeqEncoderGraph(net, nan_for_bad_lengths).eval(), Seq2SeqStepGraph(net).eval(),
            example_inputs(net, batch, steps, seed),
            {"src": {0: "batch", 1: "src_time"}, "src_lengths": {0: "batch"}}, axes,
            torch.full((batch,), net.bos_id, dtype=torch.long), {0: "batch"}, ["logits"], hidden + ["feed"] * attention,
            ["attn"] * attention,
        )  # fmt: skip
    gen = torch.Generator().manual_seed(seed)
    if net.num_conditions is not None:
        cond = torch.randint(0, net.num_conditions, (batch,), generator=gen)
    else:
        cond = torch.randn(batch, cast(int, net.cond_size), generator=gen)
    hidden = hidden_names(net.rnn)
    if net.is_token:
        previous, outputs = torch.full((batch,), net.bos_id, dtype=torch.long), ["logits"]
    else:
        previous = torch.zeros(batch, cast(int, net.output_size))
        outputs = ["mean", "variance"] if net.output_head == "gaussian" else ["mean"]
    axes = {"cond_vector": {0: "batch"}, **{name: {1: "batch"} for name in hidden}}
    return StepGraphs(GeneratorEncoderGraph(net).eval(), GeneratorStepGraph(net).eval(), (cond,),
                      {"cond": {0: "batch"}}, axes, previous, {0: "batch"}, outputs, hidden, [])  # fmt: skip


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


def example_context(net: nn.Module, batch: int = EXAMPLE_BATCH, seed: int = 0) -> dict[str, Tensor]:
    """The inputs :func:`context_names` lists for a batch of ``batch``: ``future`` ``(B, horizon, future_size)``
    float32, ``static`` ``(B, S)`` int64 ids, each column's drawn from ``[0, cardinality)``."""
    gen = torch.Generator().manual_seed(seed + 1)
    context: dict[str, Tensor] = {}
    for name in context_names(net):
        forecaster = cast(Forecaster, net)
        if name == "future":
            context[name] = torch.randn(batch, forecaster.horizon, forecaster.future_size, generator=gen)
        else:
            context[name] = torch.stack([torch.randint(0, c, (batch,), generator=gen)
                                         for c in forecaster.static_cardinalities], dim=1)  # fmt: skip
    return context


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
                   {"name": "lengths", "dtype": "int64", "shape": ["batch"], "range": [1, "time"],
                    "out_of_range": BAD_LENGTHS[fmt]}],
        "outputs": [{"name": "output", "dtype": "float32", "shape": out_shape}],
    }  # fmt: skip
    if isinstance(net, Forecaster):
        meta["inputs"] += _context_metadata(net, datamodule, fmt)
        out_channels = {"point": ["point"], "gaussian": ["mean", "variance"]}.get(net.head_kind) or [
            f"quantile_{q:g}" for q in net.quantiles]  # fmt: skip
        where = " of the row's series (series.ids)" if isinstance(datamodule, PanelDataModule) else ""
        meta["forecast"] = {"horizon": net.horizon, "head": net.head_kind, "quantiles": getattr(net, "quantiles", None),
                            "season": net.season, "channels": out_channels,
                            "units": f"scaled: with the scaler's shift and scale{where}, a point, quantile or mean "
                            "y * scale + shift, a variance v * scale ** 2 (log_standard: that is of the log; "
                            "exp it)"}  # fmt: skip
    meta.update(_data_metadata(datamodule))
    return meta


def _context_metadata(net: Forecaster, datamodule: Any, fmt: str) -> list[dict[str, Any]]:
    """The ``inputs`` entries of ``future`` and ``static`` (those :func:`context_names` lists)."""
    panel = datamodule if isinstance(datamodule, PanelDataModule) else None
    entries: list[dict[str, Any]] = []
    for name in context_names(net):
        if name == "future":
            entries.append({"name": name, "dtype": "float32", "shape": ["batch", net.horizon, net.future_size],
                            "columns": panel.future_covariates if panel else None})  # fmt: skip
        else:
            entries.append({"name": name, "dtype": "int64", "shape": ["batch", len(net.static_embeddings)],
                            "columns": panel.static_categoricals if panel else None,
                            "cardinalities": net.static_cardinalities,
                            "range": [0, "cardinality"], "out_of_range": BAD_STATIC.get(fmt)})  # fmt: skip
    return entries


def _panel_metadata(panel: PanelDataModule) -> dict[str, Any]:
    """How a consumer builds a many-series forecaster's inputs from raw rows and reads its output."""
    state = panel.state_dict()
    return {"series": {
        "ids": state["series_ids"], "x_channels": [panel.target, *panel.past_covariates, *panel.future_covariates],
        "future_channels": panel.future_covariates, "static_columns": panel.static_categoricals,
        "categories": state["categories"], "covariate_shift": state["covariate_shift"],
        "covariate_scale": state["covariate_scale"], "window": panel.window,
        "encode": "series i = ids.index(series id); x[..., 0] = (target - scaler.shift[i]) / scaler.scale[i]; "
                  "x[..., c] = (raw - covariate_shift[c - 1]) / covariate_scale[c - 1] for c >= 1 (x_channels); "
                  "future = the known-future columns over the horizon, scaled as their x channels (the last "
                  "len(future_channels) entries of covariate_shift/scale); static[:, k] = "
                  "categories[k].index(value of static_columns[k])",
    }}  # fmt: skip


def _data_metadata(datamodule: Any) -> dict[str, Any]:
    """What a consumer needs to encode inputs and decode outputs: vocabularies, tokenizer modes, class names,
    normalization statistics, scalers (those the datamodule has)."""
    meta: dict[str, Any] = {}
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
        if isinstance(datamodule, PanelDataModule):
            meta.update(_panel_metadata(datamodule))
    return meta


def _check_format(fmt: str) -> None:
    if fmt == "torchscript":  # torch.jit.script compiles none of the exported networks
        raise ValueError("export: format='torchscript' is not offered for whole models (torch.jit.script cannot "
                         "compile their networks); use format='pt2' or format='onnx': both take every cell, your "
                         "own included, and every backend, and run without seqforge (pt2: "
                         "torch.export.load(path).module(); onnx: onnxruntime); from a checkpoint: python "
                         "scripts/export.py ckpt_path=CKPT format=pt2 output=model.pt2. TorchScript takes a lone "
                         "built-in layer without zoneout: seqforge.fused.export_torchscript(seqforge.LSTM(...))")
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
    """Write ``task_or_net`` (a task from :func:`seqforge.load_from_checkpoint`, or a net) as graphs that run
    without seqforge, and ``path`` with suffix ``.json`` beside them (vocabularies, scalers, class names, names
    and shapes of every input and output). Returns the path of the (first) graph.

    - classifier, regressor, tagger, forecaster, language model: one graph ``(x, lengths) -> output`` at
      ``path``, dynamic batch and time (see the module docstring); a forecaster over many series also takes
      ``future`` and ``static`` by name (:func:`context_names`), the JSON's ``series`` entry says how to
      encode them and which scaler each series has;
    - ``Seq2Seq`` and ``ConditionalGenerator``: an encoder graph at ``<stem>.encoder<suffix>`` (returned) and a
      one-step decoder graph at ``<stem>.decoder_step<suffix>`` (see :class:`Seq2SeqStepGraph`,
      :class:`GeneratorStepGraph`); the JSON's ``decode`` entry says how to run the greedy loop over them.

    Args:
        format: ``"onnx"`` (run with onnxruntime; needs the ``export`` extra), ``"pt2"`` (``torch.export``;
            load with ``torch.export.load(path).module()``). ``"torchscript"`` is refused with what to use
            instead (TorchScript compiles none of these networks; a lone built-in layer:
            :func:`seqforge.fused.export_torchscript`).

    Raises:
        ValueError: unknown ``format``, a folder of ``path`` that does not exist, a model kind that does not
            export, or a model that cannot be traced (naming its cells).
    """
    _check_format(format)
    out = _check_path(path)
    net, datamodule = _unwrap(task_or_net)
    if not isinstance(net, (*SINGLE_GRAPH, *TWO_GRAPHS)):
        kinds = ", ".join(cls.__name__ for cls in (*SINGLE_GRAPH, *TWO_GRAPHS))
        raise ValueError(f"export: task_or_net is a {type(net).__name__}; exported are {kinds}")
    net = copy.deepcopy(net).eval()
    try:
        if isinstance(net, SINGLE_GRAPH):
            x, lengths = example_inputs(net)
            context = example_context(net)
            batch, time = torch.export.Dim("batch"), torch.export.Dim("time")
            graph = ExportGraph(net, nan_for_bad_lengths=format == "onnx").eval()
            dynamic = {"x": {0: batch, 1: time}, "lengths": {0: batch}, **{name: {0: batch} for name in context}}
            _write(graph, (x, lengths), dynamic, ["x", "lengths", *context], ["output"], out, format, context)
            meta = _metadata(net, datamodule, task_or_net, format, out)
        else:
            meta = _export_step_graphs(net, out, format)
    except Exception as err:  # tracing errors come from deep inside torch; say what to change
        first_line = next((line.strip() for line in str(err).splitlines() if line.strip()), "")
        reason = f"{type(err).__name__}: {first_line}"
        hint = (f"its cells are {_cells(net)}; the built-in cells (lstm, gru, rnn, with layer_norm, dropout, "
                "zoneout) and every backend export (the layers export through their eager loop)")
        raise ValueError(f"export: format={format!r} could not export {type(net).__name__} ({reason}); {hint}") from err
    if isinstance(net, TWO_GRAPHS):
        meta.update(_data_metadata(datamodule))
        meta["decode"].update(max_len=_max_len(task_or_net, datamodule))
        meta = {"format": format, "task": type(task_or_net).__name__, "net": type(net).__name__, **meta}
    out.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return out if isinstance(net, SINGLE_GRAPH) else out.with_name(meta["graphs"]["encoder"]["file"])


def _write(graph: nn.Module, example: tuple[Any, ...], dynamic: Any, input_names: list[str], output_names: list[str],
           out: Path, fmt: str, keywords: dict[str, Tensor] | None = None) -> None:  # fmt: skip
    """``graph`` at ``out``; ``dynamic`` is ``torch.export``'s ``dynamic_shapes`` for ``example`` (positional)
    and ``keywords`` (inputs passed by name, after the positional ones in ``input_names``)."""
    if fmt == "pt2":
        torch.export.save(torch.export.export(graph, example, kwargs=keywords, dynamic_shapes=dynamic), str(out))
        return
    program = torch.onnx.export(graph, example, kwargs=keywords, dynamic_shapes=dynamic, input_names=input_names,
                                output_names=output_names, verbose=False)  # fmt: skip
    assert program is not None
    program.save(str(out), external_data=False)


def _describe(name: str, value: Tensor, axes: dict[int, str]) -> dict[str, Any]:
    """``{"name", "dtype", "shape"}`` of a graph input or output, dynamic axes by name."""
    shape = [axes.get(dim, size) for dim, size in enumerate(value.shape)]
    return {"name": name, "dtype": str(value.dtype).removeprefix("torch."), "shape": shape}


def _export_step_graphs(net: Seq2Seq | ConditionalGenerator, out: Path, fmt: str) -> dict[str, Any]:
    """Write the encoder and one-step decoder graphs beside ``out``; their part of the metadata."""
    graphs = step_graphs(net, nan_for_bad_lengths=fmt == "onnx")
    dims: dict[str, torch.export.Dim] = {}

    def dynamic(axes: dict[int, str]) -> dict[int, Any]:
        return {dim: dims.setdefault(name, torch.export.Dim(name)) for dim, name in axes.items()}

    with torch.no_grad():
        state = graphs.encoder(*graphs.encoder_inputs)
        step_out = graphs.step(graphs.previous, state)
    encoder_file = out.with_name(f"{out.stem}.encoder{out.suffix}")
    step_file = out.with_name(f"{out.stem}.decoder_step{out.suffix}")
    _write(graphs.encoder, graphs.encoder_inputs, {k: dynamic(a) for k, a in graphs.encoder_axes.items()},
           list(graphs.encoder_axes), graphs.state, encoder_file, fmt)  # fmt: skip
    step_outputs = [*graphs.outputs, *(f"{name}_next" for name in graphs.carried), *graphs.extra]
    step_dynamic = (dynamic(graphs.previous_axes), tuple(dynamic(a) for a in graphs.state_axes.values()))
    _write(graphs.step, (graphs.previous, state), step_dynamic, ["previous", *graphs.state], step_outputs, step_file,
           fmt)  # fmt: skip
    out_axes = {**graphs.state_axes, "attn": {0: "batch", 1: "src_time"}}
    for name in graphs.outputs:
        out_axes[name] = {0: "batch"}
    for name in graphs.carried:
        out_axes[f"{name}_next"] = graphs.state_axes[name]
    encoder_inputs = [_describe(k, v, axes) for (k, axes), v in zip(graphs.encoder_axes.items(), graphs.encoder_inputs)]
    if isinstance(net, Seq2Seq):
        encoder_inputs[1].update(range=[1, "src_time"], out_of_range=BAD_LENGTHS[fmt])
    token = isinstance(net, Seq2Seq) or net.is_token
    decode = {
        "carry": {f"{name}_next": name for name in graphs.carried},
        "start": net.bos_id if token else 0.0,
        "eos_id": net.eos_id if token else None,
        "pad_id": net.pad_id if token else None,
        "greedy": ("state = encoder(inputs); previous = start (per row); repeat up to max_len: outputs = "
                   "decoder_step(previous, state); next = argmax(logits); rows already ended get pad_id; "
                   "a row ends at eos_id (kept in the output); state[name] = outputs[name_next] for each carry; "
                   "previous = next" if token else
                   "state = encoder(inputs); previous = zeros (B, F); repeat max_len times: outputs = "
                   "decoder_step(previous, state); state[name] = outputs[name_next] for each carry; "
                   "previous = mean"),
    }  # fmt: skip
    return {
        "graphs": {
            "encoder": {"file": encoder_file.name, "inputs": encoder_inputs,
                        "outputs": [_describe(k, v, graphs.state_axes[k]) for k, v in zip(graphs.state, state)]},
            "decoder_step": {"file": step_file.name,
                             "inputs": [_describe("previous", graphs.previous, graphs.previous_axes),
                                        *(_describe(k, v, graphs.state_axes[k]) for k, v in zip(graphs.state, state))],
                             "outputs": [_describe(k, v, out_axes[k]) for k, v in zip(step_outputs, step_out)]},
        },
        "decode": decode,
    }  # fmt: skip


def _max_len(task_or_net: nn.Module, datamodule: Any) -> int | None:
    """The longest output ``seqforge.predict`` decodes by default (from the training data), or None without it."""
    if datamodule is None:
        return None
    from seqforge.predict import default_max_len  # predict pulls in rich and the readers: only when needed

    try:
        return default_max_len(task_or_net)
    except ValueError:
        return None


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
