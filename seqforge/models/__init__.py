"""Plain ``nn.Module`` recurrent models, one file per topology."""

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
    "Seq2Seq",
    "SequenceClassifier",
    "SequenceTagger",
]
