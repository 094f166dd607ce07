"""Parity of a backend against the eager reference (and ``torch.nn``): outputs and every gradient.

Used by the tests and by ``scripts/benchmark.py`` (which records the same checks on the device it runs on).
The layer class is passed in, so this module does not import :mod:`seqforge.layers` (which imports this
package).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

PARITY_TOL = 1e-8  # absolute, float64


def perturbed_layer(cls: type, backend: str, device: str | torch.device = "cpu", seed: int = 0, **kwargs: Any) -> Any:
    """``cls(3, 5, ...)`` in float64 with 2 bidirectional batch-first layers (overridable by ``kwargs``) and
    parameters perturbed away from the init (layer-norm gains included), the same for every backend."""
    torch.manual_seed(seed)
    opts = {"num_layers": 2, "bidirectional": True, "batch_first": True, **kwargs}
    layer = cls(3, 5, backend=backend, dtype=torch.float64, **opts)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return layer.to(device)


def parity_inputs(layer: Any, batch: int = 4, steps: int = 6) -> tuple[Tensor, Tensor, tuple[Tensor, ...]]:
    """``x (B, T, I)``, ``lengths (B,)`` with a full, a length-1 and two middle lengths, and a random state."""
    g = torch.Generator().manual_seed(1)
    device = next(layer.parameters()).device
    x = torch.randn(batch, steps, layer.input_size, generator=g, dtype=torch.float64)
    lengths = torch.tensor([steps, 3, 1, steps - 1][:batch])
    states = 2 if layer.mode == "LSTM" else 1
    shape = (layer.num_layers * layer.num_directions, batch, layer.hidden_size)
    hx = tuple(torch.randn(*shape, generator=g, dtype=torch.float64).to(device) for _ in range(states))
    return x.to(device), lengths.to(device), hx


def outputs_and_grads(layer: nn.Module, x: Tensor, lengths: Tensor | None, hx: tuple[Tensor, ...]) -> list[Tensor]:
    """``[output, *final_states, d/dx, *d/dhx, *d/dparams]`` for a loss that touches every output.

    ``layer`` is a seqforge layer (takes ``lengths``) or a batch-first ``torch.nn.RNNBase`` (lengths packed).
    """
    x = x.clone().requires_grad_()
    hx = tuple(h.clone().requires_grad_() for h in hx)
    state_in = hx if len(hx) == 2 else hx[0]
    if isinstance(layer, nn.RNNBase):
        if lengths is None:
            out, state = layer(x, state_in)
        else:
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=layer.batch_first, enforce_sorted=False)
            out, state = layer(packed, state_in)
            time_dim = 1 if layer.batch_first else 0
            out = pad_packed_sequence(out, batch_first=layer.batch_first, total_length=x.shape[time_dim])[0]
    else:
        out, state = layer(x, state_in, lengths=lengths)
    states = state if isinstance(state, tuple) else (state,)
    weight = torch.linspace(-1, 1, out.numel(), dtype=out.dtype, device=out.device).view_as(out)
    loss = (out * weight).sum() + sum((s * (k + 2)).sum() for k, s in enumerate(states))
    grads = torch.autograd.grad(loss, [x, *hx, *layer.parameters()])
    return [out, *states, *grads]


def max_abs_diff(got: list[Tensor], ref: list[Tensor]) -> float:
    """Largest absolute difference over matching tensors (``inf`` if the lists or shapes disagree)."""
    if len(got) != len(ref) or any(a.shape != b.shape for a, b in zip(got, ref)):
        return float("inf")
    return max((a - b).abs().max().item() for a, b in zip(got, ref))


def backend_parity(cls: type, backend: str, device: str | torch.device = "cpu", repeats: int = 3, **kwargs: Any
                   ) -> float:  # fmt: skip
    """Max abs difference between ``backend`` and ``eager`` (float64, lengths, 2 bidirectional layers).

    The backend runs ``repeats`` times, so that on CUDA the uncaptured, captured and replayed CUDA-graph
    paths of the ``script`` backend are all compared.
    """
    layer = perturbed_layer(cls, backend, device, **kwargs)
    reference = perturbed_layer(cls, "eager", device, **kwargs)
    x, lengths, hx = parity_inputs(layer)
    ref = outputs_and_grads(reference, x, lengths, hx)
    return max(max_abs_diff(outputs_and_grads(layer, x, lengths, hx), ref) for _ in range(repeats))
