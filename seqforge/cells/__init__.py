"""One-step recurrent cells: the cell contract (:mod:`seqforge.cells.base`) and the built-in cells with
torch.nn's parameter contract."""

from seqforge.cells.base import CellContractError, State, check_cell, step_method
from seqforge.cells.cells import (
    BuiltinCell,
    GRUCell,
    LayerNormGRUCell,
    LayerNormLSTMCell,
    LayerNormRNNCell,
    LSTMCell,
    RNNCell,
)

__all__ = [
    "BuiltinCell",
    "CellContractError",
    "GRUCell",
    "LSTMCell",
    "LayerNormGRUCell",
    "LayerNormLSTMCell",
    "LayerNormRNNCell",
    "RNNCell",
    "State",
    "check_cell",
    "step_method",
]
