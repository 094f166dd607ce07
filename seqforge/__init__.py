"""seqforge: recurrent sequence models for PyTorch.

Cells and layers that are drop-in for ``torch.nn`` (same parameters, same results) with variable-length
batches, layer normalization and recurrent regularizers; fused backends; Lightning tasks for every
topology; Hydra configs that drive training.
"""

__version__ = "0.1.0"

from typing import Any

from seqforge.cells import (
    CellContractError,
    CfCCell,
    GRUCell,
    IndRNNCell,
    LayerNormGRUCell,
    LayerNormLSTMCell,
    LayerNormRNNCell,
    LSTMCell,
    MinGRUCell,
    RNNCell,
)
from seqforge.layers import GRU, LSTM, RNN, Recurrent, RecurrentSpec, detach_state, make_recurrent


def __getattr__(name: str) -> Any:
    # Lazy: checkpoint loading needs Lightning and Hydra, which `import seqforge` alone should not pull in.
    if name == "load_from_checkpoint":
        from seqforge.checkpoint import load_from_checkpoint

        return load_from_checkpoint
    if name == "export":  # the module is seqforge.exporting, so that this name stays the function
        from seqforge.exporting import export

        return export
    if name == "quantize":  # the module is seqforge.quantizing, so that this name stays the function
        from seqforge.quantizing import quantize

        return quantize
    raise AttributeError(f"module 'seqforge' has no attribute {name!r}")


__all__ = [
    "CellContractError",
    "CfCCell",
    "GRU",
    "GRUCell",
    "IndRNNCell",
    "LSTM",
    "LSTMCell",
    "LayerNormGRUCell",
    "LayerNormLSTMCell",
    "LayerNormRNNCell",
    "MinGRUCell",
    "RNN",
    "RNNCell",
    "Recurrent",
    "RecurrentSpec",
    "__version__",
    "detach_state",
    "export",
    "load_from_checkpoint",
    "make_recurrent",
    "quantize",
]
