"""seqforge: recurrent sequence models for PyTorch.

Cells and layers that are drop-in for ``torch.nn`` (same parameters, same results) with variable-length
batches, layer normalization and recurrent regularizers; fused backends; Lightning tasks for every
topology; Hydra configs that drive training.
"""

__version__ = "0.1.0"

from seqforge.cells import GRUCell, LayerNormGRUCell, LayerNormLSTMCell, LSTMCell, RNNCell
from seqforge.layers import GRU, LSTM, RNN, detach_state, make_recurrent

__all__ = [
    "GRU",
    "GRUCell",
    "LSTM",
    "LSTMCell",
    "LayerNormGRUCell",
    "LayerNormLSTMCell",
    "RNN",
    "RNNCell",
    "__version__",
    "detach_state",
    "make_recurrent",
]
