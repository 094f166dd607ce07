"""LightningDataModules over real offline datasets, padding collates and vocabularies."""

from seqforge.data.collate import collate_padded, collate_pairs, collate_tagged, pad_sequences
from seqforge.data.pairs import CMUDictDataModule, TextPairsDataModule
from seqforge.data.series import Scaler, SeriesDataModule
from seqforge.data.synthetic import (
    AddingProblemDataModule,
    CharStreamDataModule,
    ConditionalPatternDataModule,
    EchoTaggingDataModule,
    ParityDataModule,
    ReverseDataModule,
    SequenceTransformDataModule,
    SineForecastDataModule,
    SortDataModule,
)
from seqforge.data.text import TextDataModule
from seqforge.data.ucr import UCRDataModule
from seqforge.data.vocab import Vocabulary

__all__ = [
    "AddingProblemDataModule",
    "CharStreamDataModule",
    "ConditionalPatternDataModule",
    "EchoTaggingDataModule",
    "ParityDataModule",
    "ReverseDataModule",
    "SequenceTransformDataModule",
    "SineForecastDataModule",
    "SortDataModule",
    "CMUDictDataModule",
    "Scaler",
    "SeriesDataModule",
    "TextDataModule",
    "TextPairsDataModule",
    "UCRDataModule",
    "Vocabulary",
    "collate_padded",
    "collate_pairs",
    "collate_tagged",
    "pad_sequences",
]
