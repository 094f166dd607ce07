"""Recurrent layers (the loop around a cell) and their helpers."""

from seqforge.layers.attention import (
    AdditiveAttention,
    Attention,
    DotAttention,
    GeneralAttention,
    MultiHeadAttention,
    length_mask,
    make_attention,
)
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
    "AdditiveAttention",
    "Attention",
    "DotAttention",
    "GeneralAttention",
    "MultiHeadAttention",
    "length_mask",
    "make_attention",
    "GRU",
    "LSTM",
    "RNN",
    "LayerWeights",
    "RecurrentBase",
    "detach_state",
    "make_recurrent",
    "reverse_padded",
]
