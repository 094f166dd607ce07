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
from seqforge.cells.cfc import CfCCell
from seqforge.cells.indrnn import IndRNNCell
from seqforge.cells.mingru import MinGRUCell

__all__ = [
    "BuiltinCell",
    "CellContractError",
    "CfCCell",
    "GRUCell",
    "IndRNNCell",
    "LSTMCell",
    "LayerNormGRUCell",
    "LayerNormLSTMCell",
    "LayerNormRNNCell",
    "MinGRUCell",
    "RNNCell",
    "State",
    "check_cell",
    "step_method",
]
