"""TorchScript for importers: what ``torch.jit.script`` and ``torch.jit.trace`` see of a built-in layer.

``torch.jit.script`` of a user module that holds a ``seqforge.RNN/LSTM/GRU`` calls the layer's
``__prepare_scriptable__``, which returns a :class:`ScriptedLayer` twin with ``torch.nn``'s scripted
signature (``forward(input, hx=None, lengths=None) -> (output, h_n)`` or ``(output, (h_n, c_n))``): the same
parameters (same objects, same names), run by the layer loop of :mod:`seqforge.layers.loop` over the fused
TorchScript loops (:class:`seqforge.fused.export.KernelRunner`, differentiated by TorchScript), projections
(``proj_size``) included. Outside TorchScript the twin hands the call to the original layer, so the user's
eager module keeps every feature (``PackedSequence``, backends) after ``torch.jit.script`` has swapped the
twin in, as torch does for ``__prepare_scriptable__``. :func:`seqforge.fused.export_torchscript` is this
twin, scripted.

``torch.jit.trace`` records the loop over time for the example's number of steps only: every layer warns
(``torch.jit.TracerWarning``) when it is traced; script instead.

Zoneout has no scripted loop and is refused with an error naming the option.
"""


from typing import Any, List, Optional, Tuple  # noqa: UP035  (TorchScript reads these annotations)

import torch
from torch import Tensor, nn

from seqforge.cells import functional as SF
from seqforge.fused.export import KernelRunner
from seqforge.fused.kernels import cell_weights
from seqforge.layers.loop import LayerLoop


class ScriptedLayer(nn.Module):
    """Scriptable twin of a built-in layer sharing its parameters; subclasses give torch's ``forward``."""

    def __init__(self, layer: Any) -> None:
        super().__init__()
        if layer.zoneout:
            raise ValueError(
                f"{type(layer).__name__}: zoneout={layer.zoneout!r} has no TorchScript loop; torch.jit.script, "
                f"torch.jit.trace and export_torchscript need a layer without it"
            )
        self.mode: str = layer.mode
        self.input_size: int = layer.input_size
        # Width of each state: h is proj_size wide with projections, the LSTM's c is hidden_size wide.
        self.state_sizes: List[int] = [layer.proj_size or layer.hidden_size]  # noqa: UP006
        if layer.mode == "LSTM":
            self.state_sizes.append(layer.hidden_size)
        self.num_stacked: int = layer.num_layers * layer.num_directions
        self.dropout: float = layer.dropout
        self.recurrent_dropout: float = layer.recurrent_dropout
        self.batch_first: bool = layer.batch_first
        for pname, param in layer.named_parameters():
            self.register_parameter(pname, param)
        self.loop = LayerLoop([KernelRunner(layer.mode, cell_weights(cell)) for cell in layer.cells],
                              layer.num_directions)  # fmt: skip
        self._eager = [layer]  # a list: neither a submodule nor scripted; used outside TorchScript only
        self.train(layer.training)

    def run(self, input: Tensor, hx: Optional[List[Tensor]], lengths: Optional[Tensor]  # noqa: UP006, UP045
            ) -> Tuple[Tensor, List[Tensor]]:  # noqa: UP006  # fmt: skip
        """``input (T, B, I)`` (``(B, T, I)`` if ``batch_first``) or ``(T, I)``; ``hx`` stacked states."""
        if input.dim() not in (2, 3):
            raise ValueError(f"{self.mode}: Expected input to be 2D or 3D, got {input.dim()}D instead")
        if input.size(-1) != self.input_size:
            raise RuntimeError(f"{self.mode}: input has {input.size(-1)} features, expected {self.input_size}")
        unbatched = input.dim() == 2
        x = input.unsqueeze(1) if unbatched else (input.transpose(0, 1) if self.batch_first else input)
        states: List[Tensor] = []  # noqa: UP006
        for k, width in enumerate(self.state_sizes):
            expected = [self.num_stacked, x.size(1), width]
            if hx is None:
                states.append(torch.zeros(expected, dtype=x.dtype, device=x.device))
            else:
                h = hx[k].unsqueeze(1) if unbatched else hx[k]
                if h.shape != expected:
                    what = "hx" if len(self.state_sizes) == 1 else f"hx[{k}]"
                    raise RuntimeError(f"{self.mode}: {what} must have shape {expected}, got {h.shape}")
                states.append(h)
        if lengths is not None:
            if lengths.dim() != 1 or lengths.size(0) != x.size(1):
                raise ValueError(f"{self.mode}: lengths must have shape ({x.size(1)},), got {lengths.shape}")
            if bool(lengths.min() < 1) or bool(lengths.max() > x.size(0)):
                raise ValueError(f"{self.mode}: lengths must lie in [1, {x.size(0)}]")
            lengths = lengths.to(device=x.device, dtype=torch.long)
        out, finals = self.loop(x, states, lengths, self.training, self.dropout, self.recurrent_dropout, 0.0)
        if unbatched:
            return out.squeeze(1), [f.squeeze(1) for f in finals]
        return (out.transpose(0, 1) if self.batch_first else out), finals


class ScriptedSingleState(ScriptedLayer):
    """Twin of ``seqforge.RNN``/``GRU``: ``forward(input, hx=None, lengths=None) -> (output, h_n)``."""

    def forward(self, input: Tensor, hx: Optional[Tensor] = None, lengths: Optional[Tensor] = None  # noqa: UP045
                ) -> Tuple[Tensor, Tensor]:  # noqa: UP006  # fmt: skip
        if not torch.jit.is_scripting():
            return self._eager[0](input, hx, lengths)
        out, finals = self.run(input, None if hx is None else [hx], lengths)
        return out, finals[0]


class ScriptedLSTM(ScriptedLayer):
    """Twin of ``seqforge.LSTM``: ``forward(input, hx=None, lengths=None) -> (output, (h_n, c_n))``."""

    def forward(
        self,
        input: Tensor,
        hx: Optional[Tuple[Tensor, Tensor]] = None,  # noqa: UP006, UP045
        lengths: Optional[Tensor] = None,  # noqa: UP045
    ) -> Tuple[Tensor, Tuple[Tensor, Tensor]]:  # noqa: UP006
        if not torch.jit.is_scripting():
            return self._eager[0](input, hx, lengths)
        out, finals = self.run(input, None if hx is None else [hx[0], hx[1]], lengths)
        return out, (finals[0], finals[1])


def scripted_twin(layer: Any) -> ScriptedLayer:
    """The twin ``torch.jit.script`` compiles in place of ``layer`` (see the module docstring)."""
    return ScriptedLSTM(layer) if layer.mode == "LSTM" else ScriptedSingleState(layer)



class ScriptedCell(nn.Module):
    """Scriptable twin of a built-in cell (same parameters): the step of :mod:`seqforge.cells.functional`."""

    weights: List[Optional[Tensor]]  # noqa: UP006, UP045

    def __init__(self, cell: Any) -> None:
        super().__init__()
        self.mode: str = cell.mode
        self.name: str = type(cell).__name__
        self.input_size: int = cell.input_size
        self.output_size: int = cell.output_size
        self.hidden_size: int = cell.hidden_size
        self.relu: bool = cell.mode == "RNN_RELU"
        for pname, param in cell.named_parameters():
            self.register_parameter(pname, param)
        self.weights = cell_weights(cell)
        self._eager = [cell]  # used outside TorchScript only

    def check(self, input: Tensor) -> Tensor:
        if input.dim() not in (1, 2):
            raise ValueError(f"{self.name}: Expected input to be 1D or 2D, got {input.dim()}D instead")
        if input.size(-1) != self.input_size:
            raise RuntimeError(f"{self.name}: input has {input.size(-1)} features, expected {self.input_size}")
        return input.unsqueeze(0) if input.dim() == 1 else input

    def state(self, hx: Optional[Tensor], x: Tensor, width: int, unbatched: bool) -> Tensor:  # noqa: UP045
        if hx is None:
            return torch.zeros([x.size(0), width], dtype=x.dtype, device=x.device)
        h = hx.unsqueeze(0) if unbatched else hx
        if h.shape != [x.size(0), width]:
            raise RuntimeError(f"{self.name}: hx must have shape {[x.size(0), width]}, got {h.shape}")
        return h

    def gates(self, x: Tensor, h: Tensor) -> Tuple[Tensor, Tensor]:  # noqa: UP006
        w = self.weights
        w_ih, w_hh = w[0], w[1]
        assert w_ih is not None and w_hh is not None
        return SF.project(x, w_ih, w[2], w[4], w[5]), SF.project(h, w_hh, w[3], w[6], w[7])


class ScriptedSingleStateCell(ScriptedCell):
    """Twin of ``RNNCell``/``GRUCell``: ``forward(input, hx=None) -> h'``."""

    def forward(self, input: Tensor, hx: Optional[Tensor] = None) -> Tensor:  # noqa: UP045
        if not torch.jit.is_scripting():
            return self._eager[0](input, hx)
        x = self.check(input)
        h = self.state(hx, x, self.hidden_size, input.dim() == 1)
        gi, gh = self.gates(x, h)
        out = SF.gru_pointwise(gi, gh, h) if self.mode == "GRU" else SF.rnn_activation(gi + gh, self.relu)
        return out.squeeze(0) if input.dim() == 1 else out


class ScriptedLSTMCell(ScriptedCell):
    """Twin of ``LSTMCell``: ``forward(input, hx=None) -> (h', c')``."""

    def forward(
        self, input: Tensor, hx: Optional[Tuple[Tensor, Tensor]] = None  # noqa: UP006, UP045
    ) -> Tuple[Tensor, Tensor]:  # noqa: UP006
        if not torch.jit.is_scripting():
            return self._eager[0](input, hx)
        x = self.check(input)
        unbatched = input.dim() == 1
        h = self.state(None if hx is None else hx[0], x, self.output_size, unbatched)
        c = self.state(None if hx is None else hx[1], x, self.hidden_size, unbatched)
        gi, gh = self.gates(x, h)
        w = self.weights
        h, c = SF.lstm_pointwise(gi, gh, c, w[8], w[9])
        w_hr = w[10]
        if w_hr is not None:
            h = torch.matmul(h, w_hr.t())
        return (h.squeeze(0), c.squeeze(0)) if unbatched else (h, c)


def scripted_cell(cell: Any) -> ScriptedCell:
    """The twin ``torch.jit.script`` compiles in place of a built-in cell."""
    return ScriptedLSTMCell(cell) if cell.mode == "LSTM" else ScriptedSingleStateCell(cell)
