"""``seqforge.quantize``: dynamic int8 for CPU inference.

Dynamic quantization stores the weights as int8 (one scale per tensor) and quantizes the activations on
the fly at every matmul; the recurrence itself (gates, state) stays float32. :func:`quantize` converts

- every built-in ``seqforge.LSTM`` / ``seqforge.GRU`` (eager or any backend) into a
  :class:`QuantizedRecurrent`: torch's dynamic int8 LSTM/GRU kernel (``torch.ao.nn.quantized.dynamic``)
  over the same weights (the layers share ``torch.nn``'s parameter names), run on sequences packed by
  ``lengths``, so the call and its outputs are those of the float layer: ``(output, h_n)`` or
  ``(output, (h_n, c_n))``, padded outputs zero, final states those of each sequence's last valid step;
- every ``nn.Linear`` outside a recurrent layer (heads, bridges, attention projections) into torch's
  dynamic int8 ``Linear``.

A recurrent layer that the int8 kernels cannot run stays float32, named in a warning and in the returned
model's ``quantization`` record (:class:`QuantizationReport`): a cell other than the built-in LSTM/GRU cell
(``Recurrent`` over your own cell, ``indrnn``, ``mingru``, ``cfc``, ``rnn``), ``layer_norm=True``,
``proj_size > 0`` or ``zoneout > 0``. ``strict=True`` raises instead. Why this route, and what it costs in
accuracy and gains in speed: ``benchmarks/QUANTIZE.md``.

The result is for inference on CPU (``eval`` mode, no gradients); :func:`seqforge.export` takes the float
model.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch.ao.nn.quantized import dynamic as nnqd
from torch.ao.quantization import default_dynamic_qconfig
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from seqforge.cells.base import State, as_state, state_tensors
from seqforge.layers.masks import check_length_range
from seqforge.layers.recurrent import Recurrent, RecurrentBase

_INT8_LAYERS: dict[str, tuple[Any, Any]] = {  # mode -> (torch's float layer, its int8 twin)
    "LSTM": (nn.LSTM, nnqd.LSTM), "GRU": (nn.GRU, nnqd.GRU),
}  # fmt: skip


@contextmanager
def _torch_ao_quiet() -> Iterator[None]:
    """torch.ao's dynamic kernels are deprecated upstream (torchao has no recurrent ones): not the user's to fix."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization is deprecated")
        warnings.filterwarnings("ignore", message=r".*quantized tensor creation functions .* are deprecated")
        yield


def why_float(layer: Recurrent) -> str | None:
    """Why ``layer`` cannot run on the int8 kernels, or ``None`` when it can."""
    if not isinstance(layer, RecurrentBase):
        return f"cell {layer.cell_name!r} is not the built-in LSTM or GRU cell (int8 kernels exist for those only)"
    if layer.mode not in _INT8_LAYERS:
        return f"mode {layer.mode} has no int8 layer kernel in torch (LSTM and GRU have)"
    options = {"layer_norm": layer.layer_norm, "proj_size": layer.proj_size, "zoneout": layer.zoneout}
    for option, value in options.items():
        if value:
            return f"{option}={value!r} is not in torch's int8 {layer.mode} kernel"
    return None


class QuantizedRecurrent(nn.Module):
    """A built-in ``seqforge.LSTM``/``GRU`` on torch's dynamic int8 kernel, with the float layer's call.

    ``forward(input, hx=None, lengths=None)`` takes and returns what :meth:`Recurrent.forward` does: ``input``
    ``(T, B, I)`` (``(B, T, I)`` if ``batch_first``), unbatched ``(T, I)`` or a ``PackedSequence``; ``hx`` and
    the returned state ``(L*D, B, H)`` (``(h, c)`` for an LSTM); with ``lengths`` the batch runs packed, the
    outputs on padding are zero and the state is each sequence's after its last valid step. ``step`` and
    ``init_state`` as the float layer's. Build it with :meth:`from_float` (or :func:`quantize`).
    """

    def __init__(self, int8: nnqd.LSTM | nnqd.GRU, layer: RecurrentBase) -> None:
        super().__init__()
        self.int8 = int8
        self.mode, self.cell_name = layer.mode, layer.cell_name
        self.input_size, self.hidden_size, self.output_size = layer.input_size, layer.hidden_size, layer.output_size
        self.num_layers, self.bidirectional, self.batch_first = layer.num_layers, layer.bidirectional, layer.batch_first
        self.state_is_tensor = layer.state_is_tensor
        # The models read the device and dtype of their state from next(rnn.parameters()); int8 weights are
        # packed, not parameters, so an empty float32 one carries them.
        self.reference = nn.Parameter(torch.empty(0, dtype=torch.float32), requires_grad=False)

    @classmethod
    def from_float(cls, layer: RecurrentBase) -> QuantizedRecurrent:
        """The int8 twin of ``layer`` (weights copied and quantized; ``layer`` is left as it was)."""
        reason = why_float(layer)
        if reason is not None:
            raise ValueError(f"QuantizedRecurrent: {type(layer).__name__} cannot be quantized: {reason}")
        float_cls, int8_cls = _INT8_LAYERS[layer.mode]
        twin = float_cls(layer.input_size, layer.hidden_size, layer.num_layers, bias=True,
                         batch_first=layer.batch_first, bidirectional=layer.bidirectional)  # fmt: skip
        # bias=False layers get zero biases: torch's int8 kernels always add one, the function is the same
        missing = twin.load_state_dict(layer.state_dict(), strict=False).missing_keys
        with torch.no_grad():
            for name in missing:
                getattr(twin, name).zero_()
        twin.qconfig = default_dynamic_qconfig  # type: ignore[assignment]
        with _torch_ao_quiet():
            return cls(int8_cls.from_float(twin), layer)

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def init_state(self, batch_size: int, device: Any = None, dtype: torch.dtype | None = None) -> State:
        """Zeros shaped like ``hx``: ``(num_layers * D, B, H)`` (a tuple ``(h, c)`` for an LSTM)."""
        shape = (self.num_layers * self.num_directions, batch_size, self.hidden_size)
        count = 2 if self.mode == "LSTM" else 1
        zeros = [torch.zeros(shape, device=device, dtype=dtype or torch.float32) for _ in range(count)]
        return as_state(zeros, self.state_is_tensor)

    def forward(self, input: Tensor | PackedSequence, hx: State | None = None,
                lengths: Tensor | list[int] | None = None) -> tuple[Tensor | PackedSequence, State]:  # fmt: skip
        name = type(self).__name__
        if isinstance(input, PackedSequence):
            if lengths is not None:
                raise ValueError(f"{name}: pass lengths or a PackedSequence, not both")
            return self.int8(input, hx)
        if not isinstance(input, Tensor) or input.dim() not in (2, 3) or input.shape[-1] != self.input_size:
            got = tuple(input.shape) if isinstance(input, Tensor) else type(input).__name__
            raise ValueError(f"{name}: input must be (T, B, {self.input_size}) (batch_first: (B, T, "
                             f"{self.input_size})) or unbatched (T, {self.input_size}), got {got}")  # fmt: skip
        if input.dtype != torch.float32:
            raise TypeError(f"{name}: input must be float32 (the int8 kernels' input), got {input.dtype}")
        unbatched = input.dim() == 2
        if unbatched:
            input = input.unsqueeze(0 if self.batch_first else 1)
            hx = None if hx is None else as_state([s.unsqueeze(1) for s in state_tensors(hx)], self.state_is_tensor)
        time_dim, batch_dim = (1, 0) if self.batch_first else (0, 1)
        steps = input.shape[time_dim]
        if lengths is None:
            output, state = self.int8(input, hx)
        else:
            lengths = torch.as_tensor(lengths)
            if lengths.is_floating_point() or lengths.shape != (input.shape[batch_dim],):
                raise ValueError(f"{name}: lengths must be integers of shape ({input.shape[batch_dim]},), got "
                                 f"{lengths.dtype} {tuple(lengths.shape)}")  # fmt: skip
            check_length_range(name, lengths, steps)
            packed = pack_padded_sequence(input, lengths.cpu(), batch_first=self.batch_first, enforce_sorted=False)
            packed_out, state = self.int8(packed, hx)
            output, _ = pad_packed_sequence(packed_out, batch_first=self.batch_first, total_length=steps)
        if unbatched:
            output = output.squeeze(batch_dim)
            state = as_state([s.squeeze(1) for s in state_tensors(state)], self.state_is_tensor)
        return output, state

    def step(self, x_t: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """One time step of every layer: ``x_t (B, I)`` -> ``(h_t (B, H), new_state)``. Unidirectional only."""
        if self.bidirectional:
            raise ValueError(f"{type(self).__name__}: step() runs one direction; this layer is bidirectional")
        time_dim = 1 if self.batch_first else 0
        out, state = self.forward(x_t.unsqueeze(time_dim), state)
        assert isinstance(out, Tensor)
        return out.squeeze(time_dim), state

    def extra_repr(self) -> str:
        return f"{self.mode}, int8 weights, input_size={self.input_size}, hidden_size={self.hidden_size}"


@dataclasses.dataclass
class QuantizationReport:
    """What :func:`quantize` did: module names converted to int8, and those left in float32 with the reason."""

    int8: list[str]
    left_float: dict[str, str]


def quantize(model: nn.Module, strict: bool = False, inplace: bool = False) -> nn.Module:
    """Dynamic int8 for CPU inference: the built-in LSTM/GRU layers and the ``nn.Linear`` layers (see the module
    docstring). Returns the model (a copy unless ``inplace``) in ``eval`` mode, with ``model.quantization`` a
    :class:`QuantizationReport`. Its ``forward`` (with ``lengths``), ``step`` and decoding run as before.

    Args:
        model: a seqforge net, a task (its ``net`` is converted) or any module holding seqforge layers; float32
            on the CPU.
        strict: raise when a recurrent layer cannot be converted instead of leaving it float32 with a warning.

    Raises:
        ValueError: a parameter not float32 or not on the CPU; with ``strict``, the layers that stay float.

    Example:
        >>> import torch, seqforge
        >>> from seqforge.models import SequenceClassifier
        >>> net = SequenceClassifier(num_classes=3, input_size=2, rnn={"hidden_size": 8, "cell": "gru"})
        >>> int8 = seqforge.quantize(net)
        >>> int8.quantization.int8
        ['encoder.rnn', 'head']
        >>> int8(torch.randn(4, 5, 2), torch.tensor([5, 3, 2, 1])).shape
        torch.Size([4, 3])
    """
    for pname, param in model.named_parameters():
        if param.dtype != torch.float32 or param.device.type != "cpu":
            raise ValueError(f"quantize: model must be float32 on the CPU (int8 kernels run there); parameter "
                             f"{pname!r} is {param.dtype} on {param.device} (use model.float().cpu())")  # fmt: skip
    model = model if inplace else copy.deepcopy(model)
    model.eval()
    report = QuantizationReport(int8=[], left_float={})
    recurrent = [(name, m) for name, m in model.named_modules() if isinstance(m, Recurrent)]
    for name, layer in recurrent:
        reason = why_float(layer)
        if reason is None:
            model = _replace(model, name, QuantizedRecurrent.from_float(layer))  # type: ignore[arg-type]
            report.int8.append(name)
        else:
            report.left_float[name] = f"{type(layer).__name__}: {reason}"
    if report.left_float:
        lines = "; ".join(f"{name!r} ({why})" for name, why in report.left_float.items())
        if strict:
            raise ValueError(f"quantize(strict=True): these recurrent layers cannot run in int8: {lines}")
        warnings.warn(f"quantize: left in float32: {lines}", stacklevel=2)
    inside = tuple(f"{name}." if name else "" for name, _ in recurrent)  # a float layer's own Linears stay with it
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and not name.startswith(inside):
            module.qconfig = default_dynamic_qconfig  # type: ignore[assignment]
            with _torch_ao_quiet():
                model = _replace(model, name, nnqd.Linear.from_float(module))
            report.int8.append(name)
    report.int8.sort()
    model.quantization = report  # type: ignore[assignment]  # (nn.Module types attributes as tensors/modules)
    return model


def _replace(model: nn.Module, name: str, new: nn.Module) -> nn.Module:
    """Put ``new`` at ``name`` in ``model``; returns the model (``new`` itself when ``name`` is the root)."""
    if not name:
        return new
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent), attr, new)
    return model
