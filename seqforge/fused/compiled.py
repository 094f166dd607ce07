"""The ``torch.compile`` backend: the per-step update (recurrent projection + pointwise) compiled once.

The loop over steps stays in Python; the step is the eager cell math of :mod:`seqforge.cells.functional`,
so the compiled graph is one recurrent matmul plus one generated pointwise kernel, differentiated by
AOTAutograd. If compilation is impossible here (no working inductor toolchain), the step runs eagerly and
a warning is logged once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import Tensor

from seqforge.cells import functional as SF
from seqforge.fused.stack import B_HH, LN_C_B, LN_C_W, LN_HH_B, LN_HH_W, W_HH

log = logging.getLogger(__name__)


def _lstm_step(gi_t: Tensor, h: Tensor, c: Tensor, w: list[Tensor | None]) -> tuple[Tensor, Tensor]:
    gh = SF.project(h, w[W_HH], w[B_HH], w[LN_HH_W], w[LN_HH_B])
    return SF.lstm_pointwise(gi_t, gh, c, w[LN_C_W], w[LN_C_B])


def _gru_step(gi_t: Tensor, h: Tensor, w: list[Tensor | None]) -> Tensor:
    return SF.gru_pointwise(gi_t, SF.project(h, w[W_HH], w[B_HH], w[LN_HH_W], w[LN_HH_B]), h)


def _rnn_step(gi_t: Tensor, h: Tensor, w: list[Tensor | None], nonlinearity: str) -> Tensor:
    return SF.rnn_pointwise(gi_t, SF.project(h, w[W_HH], w[B_HH], w[LN_HH_W], w[LN_HH_B]), nonlinearity)


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


def compiled_direction(mode: str, gi: Tensor, h0: Tensor, c0: Tensor | None, w: list[Tensor | None]) -> list[Tensor]:
    """One direction with the compiled step: ``gi (T, B, G*H)`` -> ``[h_all]`` or ``[h_all, c_all]``."""
    hs: list[Tensor] = []
    if mode == "LSTM":
        h, c = h0, c0
        cs: list[Tensor] = []
        for t in range(gi.shape[0]):
            h, c = _run_step("LSTM", gi[t], h, c, w)
            hs.append(h)
            cs.append(c)
        return [torch.stack(hs), torch.stack(cs)]
    h = h0
    for t in range(gi.shape[0]):
        if mode == "GRU":
            h = _run_step("GRU", gi[t], h, w)
        else:
            h = _run_step("RNN", gi[t], h, w, "tanh" if mode == "RNN_TANH" else "relu")
        hs.append(h)
    return [torch.stack(hs)]
