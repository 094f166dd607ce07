"""The fused backends ``"script"``, ``"compile"``, ``"cudnn"`` and ``"auto"`` (registered on import).

Each follows the contract of :mod:`seqforge.fused.registry`; the layer module is duck-typed (this package
must not import :mod:`seqforge.layers`, which imports it).

- ``script``: TorchScript loops with a hand-written backward (:mod:`seqforge.fused.function`), CUDA-graph
  capture on CUDA unless ``module.cuda_graphs = False``.
- ``compile``: ``torch.compile`` of the per-step update (:mod:`seqforge.fused.compiled`).
  Both support plain and layer-norm cells, lengths, bidirectional, stacking, dropout and recurrent dropout;
  ``zoneout`` is rejected (use ``eager``).
- ``cudnn``: torch's own multi-layer kernels (``torch._VF.lstm/gru/rnn_tanh/rnn_relu``) on our parameters:
  cuDNN on CUDA, torch's native kernel on CPU; ``lengths`` go through ``pack_padded_sequence``.
- ``auto``: ``cudnn`` when the options allow it, else ``script``, else ``eager`` (see :func:`choose_backend`).
  The choice is stored in ``module.backend_used`` and logged (``logging.INFO``) when it changes.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seqforge.fused.registry import Backend, State, get_backend
from seqforge.fused.stack import stack_forward

log = logging.getLogger(__name__)


def _reject(module: Any, backend: str, options: tuple[str, ...]) -> None:
    """``ValueError`` naming the module and the first of ``options`` it enables that ``backend`` lacks."""
    for option in options:
        value = getattr(module, option)
        if value:
            raise ValueError(
                f"{type(module).__name__}(backend={backend!r}): {option}={value!r} is not supported by this "
                f"backend; use backend='eager' (or 'auto', which picks a backend that supports it)"
            )


def check_fused(module: Any) -> None:
    """The TorchScript and compiled loops support plain and layer-norm cells and recurrent dropout, not zoneout."""
    _reject(module, module.backend, ("zoneout",))


def check_cudnn(module: Any) -> None:
    """torch's kernels know neither layer norm nor recurrent dropout nor zoneout."""
    _reject(module, "cudnn", ("layer_norm", "recurrent_dropout", "zoneout"))


def _weights(module: Any) -> list[list[Tensor | None]]:
    return [
        list(module.layer_weights(layer, direction))
        for layer in range(module.num_layers)
        for direction in range(module.num_directions)
    ]


def _stack(module: Any, x: Tensor, hx: State, lengths: Tensor | None, impl: str) -> tuple[Tensor, State]:
    out, finals = stack_forward(
        x, list(hx), lengths, _weights(module), module.mode, module.num_layers, module.num_directions,
        module.dropout, module.training, impl, getattr(module, "cuda_graphs", True), module.recurrent_dropout,
    )  # fmt: skip
    return out, tuple(finals)


def script_forward(module: Any, x: Tensor, hx: State, lengths: Tensor | None) -> tuple[Tensor, State]:
    """Fused TorchScript loops with the hand-written backward."""
    check_fused(module)  # cheap; catches options changed after construction
    return _stack(module, x, hx, lengths, "script")


def compile_forward(module: Any, x: Tensor, hx: State, lengths: Tensor | None) -> tuple[Tensor, State]:
    """``torch.compile``'d step in a Python loop."""
    check_fused(module)
    return _stack(module, x, hx, lengths, "compile")


_VF_FN = {"LSTM": "lstm", "GRU": "gru", "RNN_TANH": "rnn_tanh", "RNN_RELU": "rnn_relu"}


def cudnn_forward(module: Any, x: Tensor, hx: State, lengths: Tensor | None) -> tuple[Tensor, State]:
    """torch's native multi-layer kernel (cuDNN on CUDA) on the module's parameters."""
    check_cudnn(module)
    flat: list[Tensor] = []
    for layer_w in _weights(module):
        flat.extend(p for p in layer_w[:4] if p is not None)  # w_ih, w_hh, b_ih, b_hh as torch orders them
    fn = getattr(torch._VF, _VF_FN[module.mode])
    state: Any = hx if module.mode == "LSTM" else hx[0]
    args = (module.bias, module.num_layers, module.dropout, module.training, module.bidirectional)
    if lengths is None:
        result = fn(x, state, flat, *args, False)
        return result[0], tuple(result[1:])
    packed = pack_padded_sequence(x, lengths.cpu(), enforce_sorted=False)
    order, unorder = packed.sorted_indices, packed.unsorted_indices
    assert order is not None and unorder is not None  # always set by enforce_sorted=False
    state = tuple(s.index_select(1, order) for s in hx) if module.mode == "LSTM" else hx[0].index_select(1, order)
    result = fn(packed.data, packed.batch_sizes, state, flat, *args)
    out, _ = pad_packed_sequence(packed._replace(data=result[0]), total_length=x.shape[0])
    return out, tuple(s.index_select(1, unorder) for s in result[1:])


def choose_backend(module: Any) -> str:
    """The backend ``auto`` runs for ``module``: ``cudnn`` if the options allow it, else ``script``, else ``eager``.

    The same order is right on both device types: cuDNN is the reference to beat on CUDA, and on CPU torch's
    native kernel is the fastest plain path while ``script`` beats ``eager`` (``benchmarks/SPEED.md``).
    """
    for name in ("cudnn", "script"):
        try:
            get_backend(name).check(module)
        except ValueError:
            continue
        return name
    return "eager"


def _record_choice(module: Any) -> str:
    """Choose for ``module``, store the choice in ``module.backend_used`` and log it when it changes."""
    name = choose_backend(module)
    if module.backend_used != name:
        log.info("%s(backend='auto') runs backend %r", type(module).__name__, name)
        module.backend_used = name
    return name


def auto_forward(module: Any, x: Tensor, hx: State, lengths: Tensor | None) -> tuple[Tensor, State]:
    """Run the backend :func:`choose_backend` picks (re-chosen if the options changed since construction)."""
    return get_backend(_record_choice(module)).forward(module, x, hx, lengths)


def _check_auto(module: Any) -> None:
    """Every option has at least the eager path: never raises; makes (and logs) the choice."""
    _record_choice(module)


SCRIPT = Backend("script", script_forward, check_fused)
COMPILE = Backend("compile", compile_forward, check_fused)
CUDNN = Backend("cudnn", cudnn_forward, check_cudnn)
AUTO = Backend("auto", auto_forward, _check_auto)
