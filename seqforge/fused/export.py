"""Export a seqforge recurrent layer as a self-contained TorchScript module (``torch.jit.save``-able).

The exported module runs the same orchestration and loops as the ``script`` backend
(:func:`seqforge.fused.stack.stack_forward`), differentiated by TorchScript instead of the hand-written
backward, and keeps the layer's parameter names, so ``state_dict`` keys match the layer's.
"""

from typing import Any, List  # noqa: UP035  (TorchScript, see below)

import torch
from torch import Tensor, nn

from seqforge.fused.stack import stack_forward


class ScriptRecurrent(nn.Module):
    """Scriptable twin of a ``seqforge.RNN/LSTM/GRU`` layer sharing its parameters.

    ``forward(input, hx=None, lengths=None) -> (output, [h_n] or [h_n, c_n])`` with ``input (T, B, I)``
    (``(B, T, I)`` if ``batch_first``), ``hx`` a list of ``(num_layers * D, B, H)`` tensors and ``lengths``
    int64 ``(B,)`` on the input's device (not validated: validate with the layer before exporting).
    """

    # Evaluated class annotation in typing's spelling: TorchScript cannot parse the string form here.
    weights: List[List[Tensor | None]]  # noqa: UP006

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
        self.weights = [
            list(layer.layer_weights(lay, d)) for lay in range(layer.num_layers) for d in range(layer.num_directions)
        ]
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
        out, finals = stack_forward(
            x, hx, lengths, self.weights, self.mode, self.num_layers, self.num_directions, self.dropout,
            self.training, recurrent_dropout=self.recurrent_dropout,
        )  # fmt: skip
        return (out.transpose(0, 1) if self.batch_first else out), finals


def export_torchscript(layer: Any) -> torch.jit.ScriptModule:
    """``torch.jit.script`` a seqforge recurrent layer (plain, layer norm, recurrent dropout; no zoneout)."""
    return torch.jit.script(ScriptRecurrent(layer))
