"""Plain ``nn.Module`` recurrent models, one file per topology.

Every model takes its recurrent part as one argument ``rnn``: a :class:`seqforge.RecurrentSpec`, a mapping of
its keys, or ``None`` for the model's defaults. The keys are ``cell`` (a name, ``"rnn" | "rnn_relu" | "lstm" |
"gru" | "indrnn" | "mingru" | "cfc"`` in any case, a cell class or ``functools.partial`` following
:mod:`seqforge.cells.base`, or a ``{_target_: pkg.MyCell}`` node), ``hidden_size``, ``num_layers``,
``bidirectional``, ``dropout``, ``backend``, ``recurrent_dropout``, ``zoneout`` and, for the built-in cells,
``layer_norm``, ``forget_bias``, ``cuda_graphs``; an unknown key is refused, naming it and the known ones.

In a config the spec is the node ``model.net.rnn``: ``model.net.rnn.hidden_size=64``,
``model.net.rnn.cell=gru``, ``model.net.rnn.zoneout=0.1``, or your own cell with its keywords,
``'model.net.rnn.cell={_target_:mypkg.cells.MyCell,my_option:3}'``: the model builds it once per layer and
direction as ``MyCell(input_size, hidden_size, my_option=3)`` (the ``rnn`` node is ``_recursive_: false``, so
Hydra leaves the cell node to the model; ``_partial_: true`` is accepted and changes nothing).
Models with an encoder and a decoder (seq2seq, autoregressive forecaster) build both from the one spec;
``bidirectional`` is the encoder's.
"""

from seqforge.models.autoencoder import RecurrentAutoencoder
from seqforge.models.forecaster import Forecaster
from seqforge.models.lm import LanguageModel
from seqforge.models.many_to_one import SequenceClassifier
from seqforge.models.one_to_many import ConditionalGenerator
from seqforge.models.seq2seq import Seq2Seq
from seqforge.models.tagger import SequenceTagger

__all__ = [
    "ConditionalGenerator",
    "Forecaster",
    "LanguageModel",
    "RecurrentAutoencoder",
    "Seq2Seq",
    "SequenceClassifier",
    "SequenceTagger",
]
