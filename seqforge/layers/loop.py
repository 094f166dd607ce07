"""The one loop over layers and directions, shared by every backend, and the eager step loop of a direction.

:class:`LayerLoop` owns what is the same for every cell and backend: the length mask, padded input zeroed
by selection at entry, reversal within lengths for the reverse direction, the per-direction
recurrent-dropout mask (drawn in the same order by every backend, so the RNG stream matches), final states
(each sequence's last *valid* state), padded outputs zeroed by selection, and inter-layer dropout. One
*direction runner* per layer and direction (in ``layer * D + direction`` order) runs the recurrence; every
runner has the signature

    ``runner(x (T, B, I), state [Tensor (B, ...)], lengths (B,) | None, valid (T, B) | None,
    mask (B, ...) | None, training, zoneout) -> (h_all (T, B, H), final_state [Tensor])``

where ``final_state`` is the state after each sequence's last valid step. The loop is written in the
TorchScript subset: with scriptable runners the whole :class:`LayerLoop` scripts (see
:mod:`seqforge.fused.export`).

With ``time_gaps`` (cells whose last input feature is ``Δt_t``, the time since the previous step, such as
``CfCCell(time_gaps=True)``), the loop hands the gaps to every layer: deeper layers read their input with the
first layer's ``Δt`` column appended, and a reverse direction reads the gaps of the reversed sequence (see
:func:`reverse_gaps`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqforge.cells import functional as SF
from seqforge.cells.base import as_state, state_tensors, step_method
from seqforge.layers.masks import reverse_index, reverse_time, select_valid, time_mask


class LayerLoop(nn.Module):
    """Runs ``runners`` (``num_layers * num_directions`` of them) as a stacked, optionally bidirectional layer.

    ``forward(x (T, B, I), hx [(L*D, B, ...)], lengths, training, dropout, recurrent_dropout, zoneout, masks)``
    returns ``(output (T, B, D*H) zero on padding, [final (L*D, B, ...)])``. ``masks`` (one per runner) are
    recurrent-dropout masks drawn beforehand (a decoder's steps share one draw, see ``Recurrent.step``);
    without them the loop draws its own when ``training and recurrent_dropout > 0``.
    """

    def __init__(self, runners: Sequence[nn.Module], num_directions: int, time_gaps: bool = False) -> None:
        super().__init__()
        self.runners = nn.ModuleList(runners)
        self.num_directions = num_directions
        self.time_gaps = time_gaps

    def forward(
        self,
        x: Tensor,
        hx: list[Tensor],
        lengths: Tensor | None,
        training: bool,
        dropout: float,
        recurrent_dropout: float,
        zoneout: float,
        masks: list[Tensor] | None = None,
    ) -> tuple[Tensor, list[Tensor]]:
        valid: Tensor | None = None
        index: Tensor | None = None
        if lengths is not None:
            valid = time_mask(lengths, x.size(0))  # (T, B)
            index = reverse_index(lengths, x.size(0))
            x = select_valid(x, valid)  # NaN/Inf in padding never enters, in value or gradient
        gaps: Tensor | None = None  # (T, B, 1) Δt of every step, for cells that read it
        gaps_reversed: Tensor | None = None
        if self.time_gaps:
            gaps = x[:, :, -1:]
            if self.num_directions == 2:
                gaps_reversed = reverse_gaps(gaps, lengths)
        finals: list[list[Tensor]] = [[] for _ in range(len(hx))]
        outs: list[Tensor] = []
        layer_input = x
        last_layer = len(self.runners) - self.num_directions
        for k, runner in enumerate(self.runners):
            direction = k % self.num_directions
            inp = layer_input
            if gaps is not None and k >= self.num_directions:  # a deeper layer: its input, then Δt
                inp = torch.cat([inp, gaps], 2)
            if direction == 1:
                inp = reverse_time(inp, index)
                if gaps_reversed is not None:
                    inp = torch.cat([inp[:, :, :-1], gaps_reversed], 2)
            state = [s[k] for s in hx]
            mask: Tensor | None = None
            if masks is not None:
                mask = masks[k]
            elif training and recurrent_dropout > 0.0:
                mask = recurrent_mask(state[0], recurrent_dropout)
            h_all, final = runner(inp, state, lengths, valid, mask, training, zoneout)
            for j in range(len(final)):
                finals[j].append(final[j])
            outs.append(h_all if direction == 0 else reverse_time(h_all, index))
            if direction == self.num_directions - 1:
                layer_input = torch.cat(outs, 2) if len(outs) > 1 else outs[0]
                if valid is not None:
                    layer_input = select_valid(layer_input, valid)
                if k < last_layer and dropout > 0.0:
                    layer_input = F.dropout(layer_input, dropout, training)
                outs = []
        return layer_input, [torch.stack(f) for f in finals]


def recurrent_mask(like: Tensor, p: float) -> Tensor:
    """A variational recurrent-dropout mask shaped as ``like`` (a ``(B, ...)`` state): kept units ``1 / (1 - p)``."""
    return torch.bernoulli(torch.full_like(like, 1.0 - p)) / (1.0 - p)


def reverse_gaps(gaps: Tensor, lengths: Tensor | None) -> Tensor:
    """The time gaps ``(T, B, 1)`` as a reverse direction reads them, the gaps of the reversed sequence: its
    step ``s`` is the original step ``t = L - 1 - s``, reached from step ``t + 1``, so it reads ``Δt_{t+1}``; its
    first step (no step before it, as the forward direction's first) reads ``Δt_0``. Padding stays in place."""
    steps, batch = gaps.size(0), gaps.size(1)
    s = torch.arange(steps, device=gaps.device).unsqueeze(1)  # (T, 1)
    if lengths is None:
        length = torch.full((1, batch), steps, dtype=torch.long, device=gaps.device)
    else:
        length = lengths.to(gaps.device).view(1, batch)
    index = torch.where(s < length, (length - s) % length, s)  # (T, B)
    return gaps.gather(0, index.unsqueeze(2).expand(gaps.shape))


StepFn = Callable[[nn.Module, Tensor, tuple[Tensor, ...], "Tensor | None", bool], tuple[Tensor, Any]]


def contract_step(cell: nn.Module, x_t: Tensor, state: tuple[Tensor, ...], mask: Tensor | None, is_tensor: bool
                  ) -> tuple[Tensor, Any]:  # fmt: skip
    """One contract step of ``cell`` with the recurrent-dropout ``mask`` on ``state[0]`` before the step (or,
    for cells with ``takes_recurrent_mask``, handed to their ``step``, which applies it before ``W_hh``)."""
    step = step_method(cell)
    if mask is not None and getattr(cell, "takes_recurrent_mask", False):
        return step(x_t, as_state(state, is_tensor), mask)
    if mask is not None:
        state = (state[0] * mask, *state[1:])
    return step(x_t, as_state(state, is_tensor))


class StepRunner(nn.Module):
    """A direction as a Python loop over the cell's step (or its ``forward_sequence`` when no per-step
    regularizer is on). ``step`` is :func:`contract_step` (eager) or a compiled version of it."""

    def __init__(self, cell: nn.Module, is_tensor: bool, step: StepFn = contract_step) -> None:
        super().__init__()
        self.cell: Any = cell
        self.is_tensor = is_tensor
        self.step = step

    def forward(self, x: Tensor, state: list[Tensor], lengths: Tensor | None, valid: Tensor | None,
                mask: Tensor | None, training: bool, zoneout: float) -> tuple[Tensor, list[Tensor]]:  # fmt: skip
        current = tuple(state)
        if mask is None and zoneout == 0.0 and hasattr(self.cell, "forward_sequence"):
            h_all, final = self.cell.forward_sequence(x, as_state(current, self.is_tensor), valid)
            return h_all, list(state_tensors(final))
        if torch.compiler.is_exporting():  # torch.export / ONNX: one scan over a dynamic number of steps
            return self._scan(x, current, valid, mask, training, zoneout)
        outputs = []
        for t in range(x.shape[0]):
            h, current = self._advance(x[t], current, None if valid is None else valid[t], mask, training, zoneout)
            outputs.append(h)
        return torch.stack(outputs), list(current)

    def _advance(self, x_t: Tensor, current: tuple[Tensor, ...], valid_t: Tensor | None, mask: Tensor | None,
                 training: bool, zoneout: float) -> tuple[Tensor, tuple[Tensor, ...]]:  # fmt: skip
        """One step: ``(h_t, state after it)``; a padded step (``valid_t`` False) leaves the state unchanged."""
        h, new_state = self.step(self.cell, x_t, current, mask, self.is_tensor)
        new = state_tensors(new_state)
        if zoneout > 0.0:
            zoned = tuple(SF.zoneout(old, nxt, zoneout, training) for old, nxt in zip(current, new))
            h = zoned[0] if h is new[0] else h  # the output is the (zoned) state when the cell says so
            new = zoned
        if valid_t is not None:
            new = tuple(torch.where(valid_t.view(-1, *([1] * (n.dim() - 1))), n, o) for o, n in zip(current, new))
        return h, new

    def _scan(self, x: Tensor, current: tuple[Tensor, ...], valid: Tensor | None, mask: Tensor | None,
              training: bool, zoneout: float) -> tuple[Tensor, list[Tensor]]:  # fmt: skip
        """The step loop as ``torch``'s ``scan`` (what ``torch.export`` and ONNX keep as a loop over time)."""
        from torch._higher_order_ops.scan import scan

        steps_valid = valid if valid is not None else torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)

        def body(carry: list[Tensor], xs: tuple[Tensor, Tensor]) -> tuple[list[Tensor], Tensor]:
            h, new = self._advance(xs[0], tuple(carry), xs[1], mask, training, zoneout)
            return list(new), h.clone()  # scan outputs may not alias its carry

        final, h_all = scan(body, list(current), (x, steps_valid))
        return h_all, list(final)


RunnerFactory = Callable[[nn.Module, bool], nn.Module]


def run_backend(module: Any, key: str, runner: RunnerFactory, x: Tensor, hx: tuple[Tensor, ...],
                lengths: Tensor | None, masks: list[Tensor] | None = None
                ) -> tuple[Tensor, tuple[Tensor, ...]]:  # fmt: skip
    """Run ``module``'s :class:`LayerLoop` with one ``runner(cell, state_is_tensor)`` per cell (built once per
    ``key`` and cached on the module). What every backend but ``cudnn`` calls."""
    loop = module._loops.get(key)
    if loop is None:
        loop = module._loops[key] = LayerLoop([runner(c, module.state_is_tensor) for c in module.cells],
                                              module.num_directions, module.time_gaps)  # fmt: skip
    loop.train(module.training)
    out, finals = loop(x, list(hx), lengths, module.training, module.dropout, module.recurrent_dropout,
                       module.zoneout, masks)  # fmt: skip
    return out, tuple(finals)
