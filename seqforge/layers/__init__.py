"""Recurrent layers (the loop around a cell), attention and the masks they share."""

from seqforge.layers.attention import (
    AdditiveAttention,
    Attention,
    DotAttention,
    GeneralAttention,
    MultiHeadAttention,
    make_attention,
)
from seqforge.layers.masks import length_mask, reverse_padded
from seqforge.layers.recurrent import (
    GRU,
    LSTM,
    RNN,
    LayerWeights,
    Recurrent,
    RecurrentBase,
    detach_state,
    make_recurrent,
    resolve_cell,
)
from seqforge.layers.spec import RecurrentSpec

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
    "Recurrent",
    "RecurrentBase",
    "RecurrentSpec",
    "detach_state",
    "make_recurrent",
    "resolve_cell",
    "reverse_padded",
]
