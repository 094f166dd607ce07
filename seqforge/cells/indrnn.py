r"""IndRNN: an independently recurrent cell, one recurrent weight per unit.

Li, Li, Cook, Zhu and Gao, 2018, "Independently Recurrent Neural Network (IndRNN): Building A Longer and
Deeper RNN" (CVPR 2018, arXiv:1803.04831).

This module also holds the few checks the new cells (IndRNN, minGRU, CfC) share: constructor sizes, the
per-step shape check and the zero state of the cell contract.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_NONLINEARITIES = ("relu", "tanh")


def check_sizes(cell: str, input_size: object, hidden_size: object) -> None:
    """Raise ``ValueError`` naming ``cell`` unless both sizes are positive ints (bools rejected)."""
    for arg, value in (("input_size", input_size), ("hidden_size", hidden_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{cell}: {arg} must be a positive int, got {value!r}")


def check_state(cell: str, state: Tensor, batch_size: int, hidden_size: int) -> None:
    """Check that ``state`` is ``(batch_size, hidden_size)`` (TorchScript-able)."""
    if state.dim() != 2 or state.shape[0] != batch_size or state.shape[1] != hidden_size:
        raise ValueError(
            f"{cell}: state must have shape (B={batch_size}, hidden_size={hidden_size}), got {list(state.shape)}"
        )


def check_step(cell: str, x_t: Tensor, state: Tensor, input_size: int, hidden_size: int) -> None:
    """Check one step's shapes: ``x_t (B, input_size)`` and ``state (B, hidden_size)`` (TorchScript-able)."""
    if x_t.dim() != 2 or x_t.shape[1] != input_size:
        raise ValueError(f"{cell}: x_t must have shape (B, input_size={input_size}), got {list(x_t.shape)}")
    check_state(cell, state, x_t.shape[0], hidden_size)


def zero_state(
    batch_size: int, hidden_size: int, like: Tensor, device: torch.device | None, dtype: torch.dtype | None
) -> Tensor:
    """Zeros ``(batch_size, hidden_size)`` on ``device``/``dtype``, defaulting to those of ``like``."""
    if batch_size < 0:
        raise ValueError(f"init_state: batch_size must be a non-negative int, got {batch_size}")
    if device is None:
        device = like.device
    if dtype is None:
        dtype = like.dtype
    return torch.zeros(batch_size, hidden_size, device=device, dtype=dtype)


def _check_init_range(recurrent_init: object, max_abs: float | None) -> tuple[float, float] | None:
    """``recurrent_init`` as ``(low, high)`` floats, or ``None``; ``ValueError`` naming it when it is not two
    finite numbers ``low <= high`` (inside ``[-max_abs, max_abs]`` when a bound is set)."""
    if recurrent_init is None:
        return None
    pair = list(recurrent_init) if isinstance(recurrent_init, Sequence) and not isinstance(recurrent_init, str) else []
    finite = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in pair)
    if len(pair) != 2 or not finite or pair[0] > pair[1]:
        raise ValueError(
            f"IndRNNCell: recurrent_init must be None or two finite numbers (low, high) with low <= high, "
            f"got {recurrent_init!r}"
        )
    low, high = float(pair[0]), float(pair[1])
    if max_abs is not None and (low < -max_abs or high > max_abs):
        raise ValueError(
            f"IndRNNCell: recurrent_init must lie inside [-recurrent_max_abs, recurrent_max_abs] = "
            f"[{-max_abs}, {max_abs}] (the clamp would change it), got {recurrent_init!r}"
        )
    return low, high


class IndRNNCell(nn.Module):
    r"""IndRNN cell: every unit sees the whole input but only its own previous value.

    .. math::
        h_t = \sigma(W x_t + u \odot h_{t-1} + b)

    with ``W = weight_ih (H, I)``, the per-unit recurrent weights ``u = weight_hh (H,)``, ``b = bias (H,)``
    and ``\sigma`` ReLU (the paper's choice) or tanh. Because unit ``n`` only feeds itself, its gradient
    over ``T`` steps scales like ``u_n^T`` (times the activation's slopes); the paper therefore bounds
    ``|u_n|``: with ReLU, ``recurrent_max_abs = 2 ** (1 / T)`` keeps that factor at most 2 over a
    sequence of length ``T``.

    ``recurrent_max_abs = m`` is applied in ``forward`` as ``clamp(u, -m, m)``: the stored parameter is
    left alone and the cell always uses the clipped value (a weight pushed past ``m`` gets no gradient
    while it stays there).

    Initialization (the paper's adding-problem setup as we read it): ``u ~ U(0, min(1, m))``, so every unit
    starts as a non-exploding leaky integrator; ``W ~ N(0, 0.001^2)``; ``b = 0``. ``recurrent_init =
    (low, high)`` draws ``u ~ U(low, high)`` instead: the authors' adding-problem code starts its last layer at
    ``(2 ** (-1 / T), 2 ** (1 / T))`` with ``m = 2 ** (1 / T)``, units whose state changes by a factor
    between 1/2 and 2 over the ``T`` steps, so they start out remembering the whole sequence. (That code
    also clips the stored ``u`` into ``[-m, m]`` before each update; here the clamp sits in ``forward``.)

    Args:
        input_size: features ``I`` of ``x_t``.
        hidden_size: units ``H``.
        bias: learn ``b``.
        nonlinearity: ``"relu"`` (default) or ``"tanh"``.
        recurrent_max_abs: bound ``m > 0`` on ``|u|``, or ``None`` for no bound.
        recurrent_init: ``(low, high)`` of the uniform init of ``u`` (finite, ``low <= high``, inside
            ``[-m, m]`` when ``m`` is set), or ``None`` for ``(0, min(1, m))``. A list works too (Hydra:
            ``recurrent_init: [0.9965, 1.0035]``).

    Shapes: ``forward(x_t (B, I), state (B, H)) -> (h_t (B, H), new_state (B, H))``, with ``new_state`` the
    same tensor as ``h_t``; ``init_state(B)`` gives zeros ``(B, H)``. The optional input split of the cell
    contract (:mod:`seqforge.cells.base`): ``project_input(x (T, B, I)) -> (T, B, H)`` and
    ``step_projected(p_t (B, H), state (B, H))``.

    Example:
        >>> cell = IndRNNCell(2, 16, recurrent_max_abs=2 ** (1 / 200))
        >>> h = cell.init_state(4)
        >>> out, h = cell(torch.randn(4, 2), h)
        >>> out.shape
        torch.Size([4, 16])
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: str = "relu",
        recurrent_max_abs: float | None = None,
        recurrent_init: Sequence[float] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        check_sizes("IndRNNCell", input_size, hidden_size)
        if nonlinearity not in _NONLINEARITIES:
            raise ValueError(f"IndRNNCell: nonlinearity must be one of {_NONLINEARITIES}, got {nonlinearity!r}")
        if recurrent_max_abs is not None and (
            not isinstance(recurrent_max_abs, (int, float))
            or isinstance(recurrent_max_abs, bool)
            or not math.isfinite(recurrent_max_abs)
            or recurrent_max_abs <= 0
        ):
            raise ValueError(
                f"IndRNNCell: recurrent_max_abs must be a positive finite number or None, got {recurrent_max_abs!r}"
            )
        init_range = _check_init_range(recurrent_init, recurrent_max_abs)
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.nonlinearity = nonlinearity
        self.recurrent_max_abs = recurrent_max_abs
        self._clip = recurrent_max_abs is not None
        self._max_abs = 0.0 if recurrent_max_abs is None else float(recurrent_max_abs)
        self.recurrent_init = init_range
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.weight_ih = nn.Parameter(torch.empty(hidden_size, input_size, **factory))
        self.weight_hh = nn.Parameter(torch.empty(hidden_size, **factory))
        if bias:
            self.bias = nn.Parameter(torch.empty(hidden_size, **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``u ~ U(recurrent_init)`` (default ``U(0, min(1, m))``), ``W ~ N(0, 0.001^2)``, ``b = 0`` (class docs)."""
        low, high = self.recurrent_init or (0.0, min(1.0, self._max_abs) if self._clip else 1.0)
        nn.init.uniform_(self.weight_hh, low, high)
        nn.init.normal_(self.weight_ih, 0.0, 0.001)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    @torch.jit.export
    def init_state(
        self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> Tensor:
        """Zero state ``(batch_size, H)``, on the parameters' device/dtype unless given."""
        return zero_state(batch_size, self.hidden_size, self.weight_hh, device, dtype)

    def forward(self, x_t: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        check_step("IndRNNCell", x_t, state, self.input_size, self.hidden_size)
        return self.step_projected(F.linear(x_t, self.weight_ih, self.bias), state)

    def project_input(self, x: Tensor) -> Tensor:
        """``W x + b`` for every step at once, ``x (T, B, I) -> (T, B, H)``: the input half of the contract's
        optional split (``backend="script"`` runs it as one matrix product before the step loop)."""
        if x.dim() != 3 or x.shape[2] != self.input_size:
            raise ValueError(f"IndRNNCell: x must have shape (T, B, input_size={self.input_size}), "
                             f"got {list(x.shape)}")
        return F.linear(x, self.weight_ih, self.bias)

    def step_projected(self, p_t: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """The step on ``p_t = W x_t + b (B, H)`` (a step of :meth:`project_input`) and ``state (B, H)``."""
        check_state("IndRNNCell", state, p_t.shape[0], self.hidden_size)
        u: Tensor = self.weight_hh
        if self._clip:
            u = u.clamp(-self._max_abs, self._max_abs)
        pre = p_t + u * state  # (B, H)
        h = torch.relu(pre) if self.nonlinearity == "relu" else torch.tanh(pre)
        return h, h

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, nonlinearity={self.nonlinearity!r}"
        if self.bias is None:
            s += ", bias=False"
        if self.recurrent_max_abs is not None:
            s += f", recurrent_max_abs={self.recurrent_max_abs}"
        return s if self.recurrent_init is None else s + f", recurrent_init={self.recurrent_init}"
