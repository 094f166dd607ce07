"""Recurrent layers (the loop around a cell) and their helpers."""

from seqforge.layers.recurrent import (
    GRU,
    LSTM,
    RNN,
    LayerWeights,
    RecurrentBase,
    detach_state,
    make_recurrent,
    reverse_padded,
)

__all__ = [
    "GRU",
    "LSTM",
    "RNN",
    "LayerWeights",
    "RecurrentBase",
    "detach_state",
    "make_recurrent",
    "reverse_padded",
]
