"""One registry of recurrent backends, picked by name on ``seqforge.Recurrent(backend=...)`` (and RNN/LSTM/GRU).

A backend computes a whole multi-layer (bi)directional recurrent layer. Its ``forward`` receives the layer
module (a :class:`seqforge.Recurrent`, read-only: options and ``cells``, one per layer and direction; all but
``cudnn`` run its one loop through ``seqforge.layers.loop.run_backend`` with their own direction runner), the
input in time-major layout ``(T, B, I)``, the initial state as a tuple of ``(num_layers * D, B, ...)`` tensors
(``(h0,)``, ``(h0, c0)``, or whatever the cell's state holds),
and ``lengths`` (``None`` or int64 ``(B,)`` on the input's device). It returns ``(output, final_states)``:
``output`` is ``(T, B, D * H)`` with padded steps zero, ``final_states`` a tuple shaped like the initial
state holding each sequence's last valid state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

State = tuple[Tensor, ...]
ForwardFn = Callable[[Any, Tensor, State, "Tensor | None"], tuple[Tensor, State]]


def _accept_all(module: Any) -> None:
    return None


@dataclass(frozen=True)
class Backend:
    """A named implementation of the recurrent loop.

    Attributes:
        name: the name users pass as ``backend=``.
        forward: ``(module, x, hx, lengths) -> (output, final_states)`` as described in the module docstring.
        check: raises ``ValueError`` naming the option when the module's configuration cannot run here.
    """

    name: str
    forward: ForwardFn
    check: Callable[[Any], None] = _accept_all


_BACKENDS: dict[str, Backend] = {}


def register_backend(backend: Backend) -> Backend:
    """Add ``backend`` to the registry (a later registration under the same name replaces it)."""
    _BACKENDS[backend.name] = backend
    return backend


def available_backends() -> list[str]:
    """Names of the registered backends, sorted."""
    return sorted(_BACKENDS)


def get_backend(name: str) -> Backend:
    """The backend registered as ``name``; a ``ValueError`` lists the known names otherwise."""
    try:
        return _BACKENDS[name]
    except KeyError:
        raise ValueError(f"backend: expected one of {available_backends()}, got {name!r}") from None


TORCH_KERNELS = ("cudnn", "native")  # one backend under two names: torch's own multi-layer kernels


def kernel_name(name: str, module: Any) -> str:
    """The name ``module.backend_used`` records for backend ``name``: torch's kernels (``"cudnn"`` or
    ``"native"``, one backend) are ``"cudnn"`` where cuDNN runs them (parameters on CUDA, cuDNN available and
    enabled) and ``"native"`` elsewhere (CPU); any other name is itself."""
    if name not in TORCH_KERNELS:
        return name
    ref = next(module.parameters(), None)
    on_cudnn = ref is not None and ref.device.type == "cuda" and torch.backends.cudnn.is_available()
    return "cudnn" if on_cudnn and torch.backends.cudnn.enabled else "native"
