"""Export a built-in seqforge recurrent layer as a self-contained TorchScript module (``torch.jit.save``-able).

The exported module is the same :class:`seqforge.layers.loop.LayerLoop` the layers run, scripted, with one
:class:`KernelRunner` per layer and direction: the fused forward loops of :mod:`seqforge.fused.kernels`,
differentiated by TorchScript instead of the hand-written backward. It keeps the layer's parameter names, so
``state_dict`` keys match the layer's.
"""

from typing import Any, List, Optional  # noqa: UP035  (TorchScript, see below)

import torch
from torch import Tensor, nn

from seqforge.fused import kernels
from seqforge.layers.loop import LayerLoop


class KernelRunner(nn.Module):
    """A direction runner (see :mod:`seqforge.layers.loop`) over a built-in cell's weights, scriptable."""

    # Evaluated class annotation in typing's spelling: TorchScript cannot parse the string form here.
    weights: List[Optional[Tensor]]  # noqa: UP006, UP045

    def __init__(self, mode: str, weights: list[Tensor | None]) -> None:
        super().__init__()
        self.mode = mode
        self.weights = weights

    def forward(self, x: Tensor, state: list[Tensor], lengths: Tensor | None, valid: Tensor | None,
                mask: Tensor | None, training: bool, zoneout: float) -> tuple[Tensor, list[Tensor]]:  # fmt: skip
        w = self.weights
        w_hh = w[1]
        assert w_hh is not None
        gi, b_hh, ln_hh_b = kernels.direction_inputs(x, w, self.mode)
        c0 = state[1] if len(state) > 1 else None
        states = kernels.kernel_direction(self.mode, gi, state[0], c0, w_hh, b_hh, w[6], ln_hh_b, w[8], w[9], mask)
        return states[0], kernels.final_states(states, lengths)


class ScriptRecurrent(nn.Module):
    """Scriptable twin of a ``seqforge.RNN/LSTM/GRU`` layer sharing its parameters.

    ``forward(input, hx=None, lengths=None) -> (output, [h_n] or [h_n, c_n])`` with ``input (T, B, I)``
    (``(B, T, I)`` if ``batch_first``), ``hx`` a list of ``(num_layers * D, B, H)`` tensors and ``lengths``
    int64 ``(B,)`` on the input's device (not validated: validate with the layer before exporting).
    """

    def __init__(self, layer: Any) -> None:
        super().__init__()
        if layer.zoneout:
            raise ValueError(
                f"export_torchscript: {type(layer).__name__} with zoneout={layer.zoneout} cannot be exported "
                f"(the fused loops do not implement zoneout)"
            )
        self.mode: str = layer.mode
        self.num_layers: int = layer.num_layers
        self.num_directions: int = layer.num_directions
        self.hidden_size: int = layer.hidden_size
        self.dropout: float = layer.dropout
        self.recurrent_dropout: float = layer.recurrent_dropout
        self.batch_first: bool = layer.batch_first
        for name, param in layer.named_parameters():
            self.register_parameter(name, param)
        runners = [KernelRunner(layer.mode, list(cell.weights())) for cell in layer.cells]
        self.loop = LayerLoop(runners, layer.num_directions)
        self.train(layer.training)

    def forward(
        self, input: Tensor, hx: list[Tensor] | None = None, lengths: Tensor | None = None
    ) -> tuple[Tensor, list[Tensor]]:
        x = input.transpose(0, 1) if self.batch_first else input
        if hx is None:
            zeros = torch.zeros(
                [self.num_layers * self.num_directions, x.size(1), self.hidden_size], dtype=x.dtype, device=x.device
            )
            hx = [zeros, zeros] if self.mode == "LSTM" else [zeros]
        out, finals = self.loop(x, hx, lengths, self.training, self.dropout, self.recurrent_dropout, 0.0)
        return (out.transpose(0, 1) if self.batch_first else out), finals


def export_torchscript(layer: Any) -> torch.jit.ScriptModule:
    """``torch.jit.script`` a seqforge recurrent layer (plain, layer norm, recurrent dropout; no zoneout)."""
    return torch.jit.script(ScriptRecurrent(layer))
