"""One-step recurrent cells with torch.nn's parameter contract."""

from seqforge.cells.cells import GRUCell, LayerNormGRUCell, LayerNormLSTMCell, LSTMCell, RNNCell

__all__ = ["GRUCell", "LSTMCell", "LayerNormGRUCell", "LayerNormLSTMCell", "RNNCell"]
