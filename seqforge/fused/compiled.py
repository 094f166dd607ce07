"""The ``torch.compile`` backend: the per-step update (recurrent projection + pointwise) compiled once.

The loop over steps stays in Python; the step is the eager cell math of :mod:`seqforge.cells.functional`,
so the compiled graph is one recurrent matmul plus one generated pointwise kernel, differentiated by
AOTAutograd. If compilation is impossible here (no working inductor toolchain), the step runs eagerly and
a warning is logged once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import cast

import torch
from torch import Tensor

from seqforge.cells import functional as SF

log = logging.getLogger(__name__)


# ``rec`` is ``(w_hh, b_hh, ln_hh_weight, ln_hh_bias)``, ``ln_cell`` is ``(ln_cell_weight, ln_cell_bias)``.
Rec = tuple[Tensor, "Tensor | None", "Tensor | None", "Tensor | None"]


def _masked(h: Tensor, mask: Tensor | None) -> Tensor:
    return h if mask is None else h * mask


def _lstm_step(gi_t: Tensor, h: Tensor, c: Tensor, rec: Rec, ln_cell: tuple, mask: Tensor | None
               ) -> tuple[Tensor, Tensor]:  # fmt: skip
    return SF.lstm_pointwise(gi_t, SF.project(_masked(h, mask), *rec), c, *ln_cell)


def _gru_step(gi_t: Tensor, h: Tensor, rec: Rec, mask: Tensor | None) -> Tensor:
    return SF.gru_pointwise(gi_t, SF.project(_masked(h, mask), *rec), h)


def _rnn_step(gi_t: Tensor, h: Tensor, rec: Rec, nonlinearity: str, mask: Tensor | None) -> Tensor:
    return SF.rnn_pointwise(gi_t, SF.project(_masked(h, mask), *rec), nonlinearity)


_EAGER_STEPS: dict[str, Callable] = {"LSTM": _lstm_step, "GRU": _gru_step, "RNN": _rnn_step}
_STEPS: dict[str, Callable] = {}


def _run_step(kind: str, *args: object) -> object:
    """Call the compiled step of ``kind``; fall back to the eager step for good if compilation fails."""
    step = _STEPS.get(kind)
    if step is None:
        step = _STEPS[kind] = torch.compile(_EAGER_STEPS[kind], dynamic=False)
    try:
        return step(*args)
    except Exception as err:  # noqa: BLE001  (inductor raises many error types when its toolchain is missing)
        if step is _EAGER_STEPS[kind]:
            raise
        log.warning("torch.compile of the %s step failed (%s: %s); running it eagerly", kind, type(err).__name__, err)
        _STEPS[kind] = _EAGER_STEPS[kind]
        return _EAGER_STEPS[kind](*args)


def compiled_direction(
    mode: str, gi: Tensor, h0: Tensor, c0: Tensor | None, rec: Rec, ln_cell: tuple, mask: Tensor | None = None
) -> list[Tensor]:
    """One direction with the compiled step: ``gi (T, B, G*H)`` -> ``[h_all]`` or ``[h_all, c_all]``."""
    hs: list[Tensor] = []
    if mode == "LSTM":
        h, c = h0, c0
        cs: list[Tensor] = []
        for t in range(gi.shape[0]):
            h, c = cast("tuple[Tensor, Tensor]", _run_step("LSTM", gi[t], h, c, rec, ln_cell, mask))
            hs.append(h)
            cs.append(c)
        return [torch.stack(hs), torch.stack(cs)]
    h = h0
    for t in range(gi.shape[0]):
        if mode == "GRU":
            h = cast(Tensor, _run_step("GRU", gi[t], h, rec, mask))
        else:
            h = cast(Tensor, _run_step("RNN", gi[t], h, rec, "tanh" if mode == "RNN_TANH" else "relu", mask))
        hs.append(h)
    return [torch.stack(hs)]
