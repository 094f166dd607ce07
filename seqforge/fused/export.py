"""Export a built-in seqforge recurrent layer as a self-contained TorchScript module (``torch.jit.save``-able).

The exported module is the layer's scripted twin (:mod:`seqforge.layers.scripted`, what ``torch.jit.script``
compiles for a module holding the layer): the layer loop of :mod:`seqforge.layers.loop` with one
:class:`KernelRunner` per layer and direction, i.e. the fused forward loops of :mod:`seqforge.fused.kernels`
differentiated by TorchScript instead of the hand-written backward. It keeps the layer's parameter names, so
``state_dict`` keys match the layer's.
"""

from typing import Any, List, Optional  # noqa: UP035  (TorchScript, see below)

import torch
from torch import Tensor, nn

from seqforge.fused import kernels


class KernelRunner(nn.Module):
    """A direction runner (see :mod:`seqforge.layers.loop`) over a built-in cell's weights
    (:func:`seqforge.fused.kernels.cell_weights`, projection included), scriptable."""

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
        states = kernels.kernel_direction(self.mode, gi, state[0], c0, w_hh, b_hh, w[6], ln_hh_b, w[8], w[9], w[10],
                                          mask)  # fmt: skip
        return states[0], kernels.final_states(states, lengths)


def export_torchscript(layer: Any) -> torch.jit.ScriptModule:
    """``torch.jit.script`` of a ``seqforge.RNN/LSTM/GRU`` layer's twin (plain, layer norm, recurrent dropout,
    ``proj_size``; no zoneout): ``forward(input, hx=None, lengths=None)`` with torch's signature and returns,
    ``(output, h_n)`` or ``(output, (h_n, c_n))``; ``lengths`` int ``(B,)`` are checked as in the layer."""
    from seqforge.layers.recurrent import RecurrentBase  # the layers import this package
    from seqforge.layers.scripted import scripted_twin

    if not isinstance(layer, RecurrentBase):
        raise TypeError(
            f"export_torchscript: expected a seqforge RNN, LSTM or GRU layer, got {type(layer).__name__}"
        )
    return torch.jit.script(scripted_twin(layer))
