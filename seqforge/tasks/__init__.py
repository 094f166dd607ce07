"""One LightningModule per topology; each holds a plain ``nn.Module`` net."""

from seqforge.tasks.anomaly import AnomalyTask
from seqforge.tasks.base import SequenceTask
from seqforge.tasks.classification import ClassificationTask, RegressionTask
from seqforge.tasks.forecasting import ForecastingTask
from seqforge.tasks.generation import GenerationTask
from seqforge.tasks.language_model import LanguageModelTask
from seqforge.tasks.seq2seq import Seq2SeqTask
from seqforge.tasks.tagging import TaggingTask

__all__ = [
    "AnomalyTask",
    "ClassificationTask",
    "ForecastingTask",
    "GenerationTask",
    "LanguageModelTask",
    "RegressionTask",
    "Seq2SeqTask",
    "SequenceTask",
    "TaggingTask",
]
