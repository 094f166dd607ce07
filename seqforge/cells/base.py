"""The cell contract: what any cell must provide to run through :class:`seqforge.Recurrent`.

A cell is an ``nn.Module`` built as ``cell(input_size, hidden_size, **options)`` with

- an attribute ``hidden_size``;
- optionally an attribute ``output_size``: the width of ``h_t`` when it differs from ``hidden_size`` (for
  example an LSTM with projections, whose ``h`` is ``proj_size`` wide and ``c`` ``hidden_size``); it defaults
  to ``hidden_size`` and is what :class:`seqforge.Recurrent` reports as output and feeds to the next layer;
- ``init_state(batch_size, device=None, dtype=None)``: the zero state, a Tensor or a tuple of Tensors,
  each ``(B, ...)``;
- ``forward(x_t, state) -> (h_t, new_state)`` with ``x_t (B, input_size)``, ``h_t (B, output_size)`` and
  ``new_state`` shaped like ``state``.

Optional: an attribute ``time_gaps = True`` says the last feature of ``x_t`` is ``Δt_t``, the time elapsed
since the previous step; :class:`seqforge.Recurrent` then builds deeper layers' cells with one input feature
more and hands them the gaps too, and gives a reverse direction the gaps of the reversed sequence.

Cells whose ``forward`` must keep another signature (the ``torch.nn``-compatible built-ins: ``forward(input,
hx=None)``) expose the contract as a method ``step(x_t, state) -> (h_t, new_state)``; :func:`step_method`
is the one place that chooses between the two.

Optional: ``forward_sequence(x (T, B, I), state, valid (T, B) bool or None) -> (h_all (T, B, H),
final_state)`` runs a whole direction at once (for example with a parallel scan); steps where ``valid`` is
False must leave the state unchanged, and ``valid`` is always a prefix mask per sequence. The core uses it
instead of its step loop when no per-step regularizer (zoneout, recurrent dropout) is on.

Optional, for speed under ``backend="script"``: ``project_input(x (T, B, I)) -> (T, B, ...)`` together with
``step_projected(p_t, state) -> (h_t, new_state)`` split a step into its input-only work, done for all steps
at once (for example ``x @ W_ih.T + b``: one large matmul instead of ``T`` small ones, forward and backward),
and the recurrent rest, such that ``step_projected(project_input(x)[t], state)`` equals the step on
``(x[t], state)``. The scripted loop then runs ``project_input`` once and ``step_projected`` per step; every
other backend calls the step. A cell defines both methods or neither; :func:`check_cell` checks that the two
agree on a probe. The IndRNN-like cell below would add::

        def project_input(self, x: Tensor) -> Tensor:  # (T, B, I) -> (T, B, H)
            return self.linear(x)

        def step_projected(self, p: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
            h = torch.relu(p + self.u * h)
            return h, h

A ten-line cell (an IndRNN-like one)::

    class IndRNNCell(nn.Module):
        def __init__(self, input_size: int, hidden_size: int) -> None:
            super().__init__()
            self.hidden_size = hidden_size
            self.linear = nn.Linear(input_size, hidden_size)
            self.u = nn.Parameter(torch.rand(hidden_size))

        def init_state(self, batch_size: int, device=None, dtype=None) -> Tensor:
            return torch.zeros(batch_size, self.hidden_size, device=device, dtype=dtype)

        def forward(self, x: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
            h = torch.relu(self.linear(x) + self.u * h)
            return h, h

:func:`check_cell` runs a cell once on a tiny probe and raises :class:`CellContractError`, naming the cell
and what it returned, when it breaks the contract.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, cast

import torch
from torch import Tensor, nn

State = Tensor | tuple[Tensor, ...]
PROBE_BATCH = 2
SPLIT_METHODS = ("project_input", "step_projected")


class CellContractError(TypeError):
    """A cell does not follow the contract of :mod:`seqforge.cells.base`."""


class ShapeError(ValueError, RuntimeError):
    """A tensor of the wrong shape for a cell or layer (input features, ``hx``): a ``ValueError`` here, and the
    ``RuntimeError`` that ``torch.nn`` raises in the same case, so code written against torch still catches it."""


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type (a constructor option, the input's dtype): a ``TypeError`` here, and a
    ``ValueError`` where ``torch.nn`` raises that instead (the input dtype of a layer)."""


def output_size(cell: nn.Module) -> int:
    """The width of a cell's ``h_t``: its ``output_size`` attribute if it has one, else its ``hidden_size``."""
    return cast(int, getattr(cell, "output_size", getattr(cell, "hidden_size", None)))


def cell_name(cell: Any) -> str:
    """A readable name for a cell class, a ``functools.partial`` of one, or a cell instance."""
    if isinstance(cell, functools.partial):
        return cell_name(cell.func)
    target = cell if isinstance(cell, type) else type(cell)
    return f"{target.__module__}.{target.__qualname__}"


def step_method(cell: nn.Module) -> Callable[..., tuple[Tensor, State]]:
    """The contract's step of ``cell``: its ``step`` method if it has one, else its ``forward``."""
    step = getattr(cell, "step", None)
    return step if callable(step) else cell


def projects_input(cell: nn.Module) -> bool:
    """Whether ``cell`` offers the optional split ``project_input`` + ``step_projected`` (see the module docs)."""
    return all(callable(getattr(cell, method, None)) for method in SPLIT_METHODS)


def state_tensors(state: State) -> tuple[Tensor, ...]:
    """A state as a tuple of tensors (a lone tensor becomes a 1-tuple)."""
    return (state,) if isinstance(state, Tensor) else tuple(state)


def as_state(tensors: tuple[Tensor, ...] | list[Tensor], is_tensor: bool) -> State:
    """The inverse of :func:`state_tensors` for a cell whose state is a lone tensor (``is_tensor``) or a tuple."""
    return tensors[0] if is_tensor else tuple(tensors)


def build_cell(cell: Callable[..., nn.Module], input_size: int, hidden_size: int, **options: Any) -> nn.Module:
    """``cell(input_size, hidden_size, **options)``, with an error naming the cell when that fails or is no module."""
    name = cell_name(cell)
    if not callable(cell):
        raise CellContractError(f"cell must be a cell class or a functools.partial of one, got {cell!r}")
    try:
        built = cell(input_size, hidden_size, **options)
    except TypeError as err:
        raise CellContractError(
            f"cell {name} could not be built as cell(input_size={input_size}, hidden_size={hidden_size}"
            f"{''.join(f', {k}={v!r}' for k, v in options.items())}): {err}"
        ) from err
    if not isinstance(built, nn.Module):
        raise CellContractError(f"cell {name} must build an nn.Module, got {type(built).__name__}")
    return built


def _describe(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"Tensor{tuple(value.shape)} {value.dtype} on {value.device}"
    if isinstance(value, (tuple, list)):
        return f"{type(value).__name__}({', '.join(_describe(v) for v in value)})"
    return type(value).__name__


def _check_state(name: str, what: str, state: Any, batch: int, like: Tensor) -> tuple[Tensor, ...]:
    if isinstance(state, Tensor):
        parts: tuple[Any, ...] = (state,)
    elif isinstance(state, tuple) and state and all(isinstance(s, Tensor) for s in state):
        parts = state
    else:
        raise CellContractError(f"cell {name}: {what} must be a Tensor or a tuple of Tensors, got {_describe(state)}")
    for part in parts:
        if part.dim() == 0 or part.shape[0] != batch or part.dtype != like.dtype or part.device != like.device:
            raise CellContractError(
                f"cell {name}: {what} must hold tensors (B={batch}, ...) of {like.dtype} on {like.device}, "
                f"got {_describe(state)}"
            )
    return parts


def _check_split(cell: nn.Module, name: str, input_size: int, zero: State) -> None:
    """The optional split: both methods or neither, and ``step_projected(project_input(x)[0], s)`` equal to the
    step on ``(x, s)`` within ``sqrt(eps)`` of the dtype, on a non-zero probe and a non-zero state."""
    present = [method for method in SPLIT_METHODS if callable(getattr(cell, method, None))]
    if not present:
        return
    if len(present) == 1:
        missing = next(method for method in SPLIT_METHODS if method not in present)
        raise CellContractError(f"cell {name} defines {present[0]} but not {missing}: the optional input split "
                                f"needs both (see seqforge.cells.base)")  # fmt: skip
    like = state_tensors(zero)[0]
    x = torch.linspace(0.1, 1.0, PROBE_BATCH * input_size, dtype=like.dtype, device=like.device)
    x = x.view(PROBE_BATCH, input_size)
    step = step_method(cell)
    state = step(x, zero)[1]  # a non-zero state
    expected = step(x, state)
    p = cast(Any, cell).project_input(x.unsqueeze(0))
    if not isinstance(p, Tensor) or p.dim() < 2 or tuple(p.shape[:2]) != (1, PROBE_BATCH):
        raise CellContractError(
            f"cell {name}: project_input(x (T=1, B={PROBE_BATCH}, {input_size})) must return a Tensor (T, B, ...), "
            f"got {_describe(p)}"
        )
    got = cast(Any, cell).step_projected(p[0], state)
    flat_expected = [expected[0], *state_tensors(expected[1])]
    ok = isinstance(got, tuple) and len(got) == 2 and isinstance(got[0], Tensor)
    flat_got = [got[0], *state_tensors(got[1])] if ok else []
    if not ok or [t.shape for t in flat_got] != [t.shape for t in flat_expected]:
        raise CellContractError(f"cell {name}: step_projected must return (h_t, new_state) as the step does "
                                f"({_describe(expected)}), got {_describe(got)}")  # fmt: skip
    diff = max((a - b).abs().max().item() for a, b in zip(flat_got, flat_expected))
    tol = torch.finfo(like.dtype).eps ** 0.5
    if not diff <= tol * max(1.0, max(b.abs().max().item() for b in flat_expected)):
        raise CellContractError(
            f"cell {name}: step_projected(project_input(x)[t], state) must equal the step on (x[t], state); on a "
            f"probe they differ by {diff:.3g} (tolerance {tol:.1g})"
        )


def check_cell(cell: nn.Module, input_size: int, dtype: torch.dtype, device: torch.device) -> bool:
    """Run ``cell`` once on a probe ``(2, input_size)`` and check every part of the contract (the optional input
    split included).

    Returns whether the state is a lone tensor (else a tuple). Raises :class:`CellContractError` naming the
    cell and what it returned. Runs under ``no_grad`` in evaluation mode (restored afterwards).
    """
    name = cell_name(cell)
    hidden = getattr(cell, "hidden_size", None)
    if not isinstance(hidden, int) or isinstance(hidden, bool):
        raise CellContractError(f"cell {name} must have an int attribute hidden_size, got {hidden!r}")
    init = getattr(cell, "init_state", None)
    if not callable(init):
        raise CellContractError(f"cell {name} must define init_state(batch_size, device=None, dtype=None)")
    probe = torch.zeros(PROBE_BATCH, input_size, dtype=dtype, device=device)
    training = cell.training
    cell.eval()
    try:
        with torch.no_grad():
            zero = _check_state(name, "init_state(2)", init(PROBE_BATCH, device=device, dtype=dtype), PROBE_BATCH,
                                probe)  # fmt: skip
            is_tensor = len(zero) == 1 and isinstance(init(PROBE_BATCH, device=device, dtype=dtype), Tensor)
            result = step_method(cell)(probe, as_state(zero, is_tensor))
            if not isinstance(result, tuple) or len(result) != 2:
                raise CellContractError(f"cell {name}: step must return (h_t, new_state), got {_describe(result)}")
            h, new = result
            width = output_size(cell)
            if not isinstance(width, int) or isinstance(width, bool):
                raise CellContractError(f"cell {name} has output_size={width!r}, expected an int")
            expected = (PROBE_BATCH, width)
            if not isinstance(h, Tensor) or tuple(h.shape) != expected or h.dtype != dtype or h.device != device:
                raise CellContractError(
                    f"cell {name}: h_t must be a Tensor{expected} of {dtype} on {device}, got {_describe(h)}"
                )
            new_parts = _check_state(name, "new_state", new, PROBE_BATCH, probe)
            if isinstance(new, Tensor) != is_tensor or [p.shape for p in new_parts] != [z.shape for z in zero]:
                raise CellContractError(
                    f"cell {name}: new_state must be shaped like init_state ({_describe(as_state(zero, is_tensor))})"
                    f", got {_describe(new)}"
                )
            _check_split(cell, name, input_size, as_state(zero, is_tensor))
    finally:
        cell.train(training)
    return is_tensor
