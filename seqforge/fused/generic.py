"""The ``script`` backend for any cell that ``torch.jit.script`` accepts: the cell scripted inside a scripted
step loop (one per layer and direction), differentiated by TorchScript's autograd.

The loop has the direction-runner signature of :mod:`seqforge.layers.loop` and the contract's semantics:
the recurrent-dropout mask multiplies ``state[0]`` before the step, steps where ``valid`` is False leave the
state unchanged. TorchScript needs one state type, so there is one loop for a lone-tensor state and one
for a ``(Tensor, Tensor)`` state; other state structures are refused (use ``eager`` or ``compile``).

A cell that offers the optional split of :mod:`seqforge.cells.base` (``project_input`` + ``step_projected``)
has its input-only work done once for all steps before the loop (one large matmul forward and backward
instead of ``T`` small ones and ``T`` weight-gradient accumulations), then ``step_projected`` per step.
Timings and what was tried: ``benchmarks/SPEED.md``.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import Tensor, nn

from seqforge.cells.base import State, cell_name, projects_input, state_tensors, step_method


def _keep(valid_t: Tensor, like: Tensor) -> Tensor:
    return valid_t.view([-1] + [1] * (like.dim() - 1))


def _all_valid_steps(lengths: Tensor | None, valid: Tensor | None, steps: int) -> int:
    """How many leading steps every sequence has (``valid`` is a prefix mask): there the state needs no
    ``torch.where``. Read from ``lengths`` on the CPU only (reading a device tensor would synchronize)."""
    if valid is None:
        return steps
    if lengths is None or not lengths.is_cpu:
        return 0
    return min(int(lengths.min()), steps)


class CellLoop(nn.Module):
    """What the two step loops share: the cell, and its per-step inputs."""

    def __init__(self, cell: nn.Module) -> None:
        super().__init__()
        self.cell: Any = cell

    def step_inputs(self, x: Tensor) -> list[Tensor]:
        """``T`` views ``(B, ...)``: of ``cell.project_input(x)`` when the cell offers the split, else of ``x``.
        ``unbind`` views, whose gradients autograd stacks once (``x[t]`` would zero-fill a ``(T, B, ...)``
        gradient in every step's backward)."""
        if hasattr(self.cell, "project_input"):  # resolved when scripting: only the taken branch is compiled
            return list(self.cell.project_input(x).unbind(0))
        return list(x.unbind(0))


class TensorStateLoop(CellLoop):
    """Scripted step loop of a cell whose state is one tensor."""

    def forward(self, x: Tensor, state: list[Tensor], lengths: Tensor | None, valid: Tensor | None,
                mask: Tensor | None, training: bool, zoneout: float) -> tuple[Tensor, list[Tensor]]:  # fmt: skip
        h = state[0]
        outputs: list[Tensor] = []
        steps = self.step_inputs(x)
        whole = _all_valid_steps(lengths, valid, len(steps))
        for t in range(len(steps)):
            h_in = h if mask is None else h * mask
            if hasattr(self.cell, "step_projected"):  # resolved when scripting
                out, new = self.cell.step_projected(steps[t], h_in)
            else:
                out, new = self.cell(steps[t], h_in)
            if valid is not None and t >= whole:
                new = torch.where(_keep(valid[t], new), new, h)
            h = new
            outputs.append(out)
        return torch.stack(outputs), [h]


class PairStateLoop(CellLoop):
    """Scripted step loop of a cell whose state is a pair of tensors, such as an LSTM's ``(h, c)``."""

    def forward(self, x: Tensor, state: list[Tensor], lengths: Tensor | None, valid: Tensor | None,
                mask: Tensor | None, training: bool, zoneout: float) -> tuple[Tensor, list[Tensor]]:  # fmt: skip
        a, b = state[0], state[1]
        outputs: list[Tensor] = []
        steps = self.step_inputs(x)
        whole = _all_valid_steps(lengths, valid, len(steps))
        for t in range(len(steps)):
            a_in = a if mask is None else a * mask
            if hasattr(self.cell, "step_projected"):
                out, new = self.cell.step_projected(steps[t], (a_in, b))
            else:
                out, new = self.cell(steps[t], (a_in, b))
            new_a, new_b = new
            if valid is not None and t >= whole:
                new_a = torch.where(_keep(valid[t], new_a), new_a, a)
                new_b = torch.where(_keep(valid[t], new_b), new_b, b)
            a, b = new_a, new_b
            outputs.append(out)
        return torch.stack(outputs), [a, b]


class StepAsForward(nn.Module):
    """Presents a cell's contract ``step`` as ``forward`` (for cells whose ``forward`` is torch's signature)."""

    def __init__(self, cell: nn.Module) -> None:
        super().__init__()
        self.cell: Any = cell

    def forward(self, x: Tensor, state: Any) -> Any:
        return self.cell.step(x, state)


_CHECKED: weakref.WeakKeyDictionary[nn.Module, str] = weakref.WeakKeyDictionary()  # "" or the complaint


def check_scriptable(cell: Any) -> None:
    """Script the loop around ``cell`` once (remembered per cell) and raise what :func:`script_cell_loop` raises."""
    if cell not in _CHECKED:
        try:
            with torch.inference_mode(False):
                script_cell_loop(cell, cell.init_state(1))
        except ValueError as err:
            _CHECKED[cell] = str(err)
        else:
            _CHECKED[cell] = ""
    if _CHECKED[cell]:
        raise ValueError(_CHECKED[cell])


def script_cell_loop(cell: nn.Module, state: State) -> torch.jit.ScriptModule:
    """``torch.jit.script`` of the step loop around ``cell`` (``state``: its zero state, for the structure).

    Raises ``ValueError`` naming the cell and TorchScript's first complaint when it cannot be scripted.
    """
    name = cell_name(cell)
    parts = state_tensors(state)
    if len(parts) > 2 or (len(parts) == 2 and isinstance(state, Tensor)):
        raise ValueError(
            f"backend='script': cell {name} has a state of {len(parts)} tensors; the scripted loop supports a "
            f"Tensor or a (Tensor, Tensor) state (use backend='eager' or 'compile')"
        )
    inner = StepAsForward(cell) if step_method(cell) is not cell and not projects_input(cell) else cell
    loop = TensorStateLoop(inner) if isinstance(state, Tensor) else PairStateLoop(inner)
    try:
        return torch.jit.script(loop)
    except Exception as err:  # noqa: BLE001  (TorchScript raises many error types)
        first = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise ValueError(f"backend='script': cell {name} cannot be scripted by TorchScript: {first}") from err
