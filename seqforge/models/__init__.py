"""Plain ``nn.Module`` recurrent models, one file per topology.

Every model builds its recurrent layers with :func:`seqforge.make_recurrent` from the same options:
``cell`` (a name, ``"rnn" | "rnn_relu" | "lstm" | "gru" | "indrnn" | "mingru" | "cfc"`` in any case, a cell
class or ``functools.partial`` following :mod:`seqforge.cells.base`, or a ``{_target_: pkg.MyCell}`` node; in
a config ``model.net.cell={_target_:pkg.MyCell,_partial_:true}``), ``hidden_size``, ``num_layers``, ``dropout``,
``backend``, ``layer_norm``, and ``rnn_options``, a dict of further layer keywords such as
``{"recurrent_dropout": 0.2, "zoneout": 0.1, "forget_bias": 1.0}`` (in a config:
``model.net.rnn_options={recurrent_dropout:0.2}``).
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
