"""Tagged text: CoNLL-style ``token ... tag`` columns or CoNLL-U, and the Turkish treebanks shipped offline.

``format="conll"``: ``token<space or TAB>...<space or TAB>tag`` lines, a blank line between sentences. The
first column is the token and the last the tag (columns in between, such as part-of-speech or chunk tags,
are ignored). ``-DOCSTART-`` lines (document markers of the CoNLL-2003 files) are not sentences and are
passed over; every other line counts.

``format="conllu"``: the ten TAB-separated columns of Universal Dependencies files; the token is ``FORM``
and the tag ``UPOS`` (``tag_field="upos"``) or ``XPOS``. ``#`` comment lines, multiword-token ranges
(``1-2``) and empty nodes (``1.1``) are not tokens and are passed over.

Tags are kept as written: BIO/BIOES repairs (an ``I-`` after ``O``) are those of
:mod:`seqforge.tasks.entity_metrics`, applied when entities are read from tags.

Named sources (``name=``), read from the ``turkish-treebanks`` wheel (``pip install --no-deps
turkish-treebanks``; Google Research, Apache-2.0; Kayadelen et al. 2020, "A Gold Standard Dependency
Corpus for Turkish", LREC): ``turkish_web`` (Turkish Web Treebank, 2,541 sentences, 32,422 tokens of
forums, blogs and other web text) and ``turkish_wiki`` (Wikipedia, 2,310 sentences, 48,948 tokens), both
CoNLL-U with universal part-of-speech tags (14 in use). The wheel ships no train/dev/test split, so the
sentences are split by ``seed`` (``val_fraction``/``test_fraction``). ``turkish_web`` is ``DEFAULT_SOURCE``: read
when neither ``name`` nor ``train_path`` is given (also by ``data=conll`` alone); ``train_path=FILE`` alone reads
the file.
"""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seqforge.data.base import SplitDataModule, check_fraction, check_positive_int, check_source, read_lines
from seqforge.data.collate import collate_tagged
from seqforge.data.vocab import Vocabulary

FORMATS = ("conll", "conllu")
CONLLU_FIELDS = {"upos": 3, "xpos": 4}  # column index of the tag in a CoNLL-U token line
TAGGED_SOURCES = {"turkish_web": "data/web.conllu", "turkish_wiki": "data/wiki.conllu"}
DEFAULT_SOURCE = "turkish_web"  # the source read when neither name nor train_path is given
Sentence = tuple[list[str], list[str]]


def read_conll(path: str | os.PathLike[str], owner: str, format: str = "conll",
               tag_field: str = "upos") -> list[Sentence]:  # fmt: skip
    """``(tokens, tags)`` for every sentence; a line with no tag column is an error naming file and line."""
    if format not in FORMATS:
        raise ValueError(f"{owner}: format must be one of {FORMATS}, got {format!r}")
    if tag_field not in CONLLU_FIELDS:
        raise ValueError(f"{owner}: tag_field must be one of {sorted(CONLLU_FIELDS)}, got {tag_field!r}")
    sentences: list[Sentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    for number, line in enumerate([*read_lines(path, owner), ""], start=1):
        if format == "conllu":
            if line.startswith("#"):
                continue
            fields = line.rstrip("\n").split("\t") if line.strip() else []
        else:
            fields = line.split()
        if not fields or (format == "conll" and fields[0] == "-DOCSTART-"):
            if tokens:
                sentences.append((tokens, tags))
            tokens, tags = [], []
            continue
        if format == "conllu":
            if len(fields) != 10:
                raise ValueError(f"{owner}: {path}, line {number}: {len(fields)} TAB-separated columns, a CoNLL-U "
                                 "token line has 10 (ID FORM LEMMA UPOS XPOS FEATS HEAD DEPREL DEPS MISC)")
            if "-" in fields[0] or "." in fields[0]:  # a multiword-token range or an empty node
                continue
            column = CONLLU_FIELDS[tag_field]
            if fields[column] in ("", "_"):
                raise ValueError(f"{owner}: {path}, line {number}, column {column + 1}: no {tag_field.upper()} tag "
                                 f"for the token {fields[1]!r}")
            tokens.append(fields[1])
            tags.append(fields[column])
            continue
        if len(fields) < 2:
            raise ValueError(f"{owner}: {path}, line {number}, column 2: no tag after the token {fields[0]!r}; "
                             "expected token<space or TAB>tag")
        tokens.append(fields[0])
        tags.append(fields[-1])
    return sentences


def tagged_source_path(name: str) -> Path:
    """The file of a named source of :data:`TAGGED_SOURCES`, located in its installed wheel."""
    if name not in TAGGED_SOURCES:
        raise ValueError(f"ConllDataModule: unknown source {name!r}; available: {sorted(TAGGED_SOURCES)}")
    try:
        dist = importlib.metadata.distribution("turkish-treebanks")
    except importlib.metadata.PackageNotFoundError:
        raise ModuleNotFoundError("ConllDataModule: the 'turkish-treebanks' wheel ships this data offline: "
                                  "pip install --no-deps turkish-treebanks") from None
    path = Path(str(dist.locate_file(TAGGED_SOURCES[name])))
    if not path.exists():
        raise FileNotFoundError(f"ConllDataModule: {path} not found in the installed 'turkish-treebanks' wheel")
    return path


class ConllDataModule(SplitDataModule):
    """Sequence tagging from CoNLL-style or CoNLL-U files (see :func:`read_conll`) or a named source.

    Args:
        train_path, val_path, test_path: the three files; with ``val_path`` and ``test_path`` both ``None``,
            the sentences of ``train_path`` (or of the source ``name``) are split at random by ``seed``,
            ``val_fraction`` and ``test_fraction`` of them held out.
        name: a source of :data:`TAGGED_SOURCES` instead of ``train_path`` (CoNLL-U); ``None`` without a
            ``train_path``: ``DEFAULT_SOURCE`` (turkish_web). A name and a ``train_path`` together are refused.
        format: ``"conll"`` or ``"conllu"``; ``tag_field``: ``"upos"`` or ``"xpos"`` (CoNLL-U only).
        max_vocab: most frequent training tokens kept (others ``unk``; ties by token); ``None`` keeps all.
        lowercase: lowercase tokens before the vocabulary lookup.

    A tag in the validation or test part that training never has is an error naming the file and sentence.
    Batches: ``(x, lengths, y)``: ``x`` int64 ``(B, T)`` token ids (pad 0), ``y`` ``(B, T)`` tag ids (tags
    sorted, padding ``-100``). ``net_kwargs = {"vocab_size": V, "num_classes": K}``; ``tags`` names the ids;
    ``sentences[split]`` keeps the ``(tokens, tags)`` of each split (for baselines).
    """

    collate_fn = staticmethod(collate_tagged)

    def __init__(
        self,
        train_path: str | os.PathLike[str] | None = None,
        val_path: str | os.PathLike[str] | None = None,
        test_path: str | os.PathLike[str] | None = None,
        name: str | None = None,
        format: str = "conll",
        tag_field: str = "upos",
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        seed: int = 0,
        max_vocab: int | None = 30000,
        lowercase: bool = False,
        batch_size: int = 32,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size, num_workers)
        owner = type(self).__name__
        name = check_source(owner, train_path, name, DEFAULT_SOURCE, path_key="train_path")
        if (val_path is None) != (test_path is None):
            raise ValueError(f"{owner}: pass both val_path and test_path, or neither (then the training sentences "
                             f"are split by seed), got val_path={val_path!r}, test_path={test_path!r}")
        if max_vocab is not None:
            check_positive_int(owner, "max_vocab", max_vocab)
        if name is not None:
            train_path, format = tagged_source_path(name), "conllu"
        self.format, self.tag_field = format, tag_field
        self.paths = {"train": train_path, "val": val_path, "test": test_path}
        self.name = name
        self.val_fraction = check_fraction(owner, "val_fraction", val_fraction)
        self.test_fraction = check_fraction(owner, "test_fraction", test_fraction)
        self.seed = int(seed)
        self.max_vocab, self.lowercase = max_vocab, bool(lowercase)
        self.vocab: Vocabulary | None = None
        self.tags: list[str] | None = None
        self.sentences: dict[str, list[Sentence]] = {}

    def read_splits(self) -> dict[str, list[Sentence]]:
        """The ``(tokens, tags)`` sentences of each split (read, or split from the one file by ``seed``)."""
        owner = type(self).__name__
        read = {s: read_conll(p, owner, self.format, self.tag_field) for s, p in self.paths.items() if p is not None}
        if "val" in read:
            return read
        rows = read["train"]
        order = np.random.default_rng(self.seed).permutation(len(rows))
        n_test, n_val = round(len(rows) * self.test_fraction), round(len(rows) * self.val_fraction)
        if n_test < 1 or n_val < 1 or n_test + n_val >= len(rows):
            raise ValueError(f"{owner}: {len(rows)} sentences in {self.paths['train']} give an empty train, val or "
                             f"test part with val_fraction={self.val_fraction}, test_fraction={self.test_fraction}")
        parts = {"test": order[:n_test], "val": order[n_test : n_test + n_val], "train": order[n_test + n_val :]}
        return {s: [rows[i] for i in sorted(parts[s])] for s in ("train", "val", "test")}

    def build(self) -> dict[str, list[tuple[torch.Tensor, torch.Tensor]]]:
        owner = type(self).__name__
        self.sentences = self.read_splits()
        words = {s: [[w.lower() if self.lowercase else w for w in t] for t, _ in rows]
                 for s, rows in self.sentences.items()}  # fmt: skip
        if self.vocab is None:
            counts: dict[str, int] = {}
            for sentence in words["train"]:
                for w in sentence:
                    counts[w] = counts.get(w, 0) + 1
            ranked = sorted((w for w in counts if w not in Vocabulary.specials), key=lambda w: (-counts[w], w))
            self.vocab = Vocabulary(ranked[: self.max_vocab])
        if self.tags is None:
            self.tags = sorted({tag for _, tags in self.sentences["train"] for tag in tags})
        index = {tag: i for i, tag in enumerate(self.tags)}
        for split in ("val", "test"):
            where = self.paths[split] or f"{self.paths['train']} ({split} part)"
            for number, (_, tags) in enumerate(self.sentences[split], start=1):
                unknown = [t for t in tags if t not in index]
                if unknown:
                    raise ValueError(f"{owner}: {where}, sentence {number}: tag {unknown[0]!r} is not in the "
                                     f"training file (tags: {self.tags})")
        return {
            s: [(torch.tensor(self.vocab.encode(w)), torch.tensor([index[t] for t in tags]))
                for w, (_, tags) in zip(words[s], rows)]
            for s, rows in self.sentences.items()
        }  # fmt: skip

    def split_text(self, text: str) -> list[str]:
        """The tokens of a new sentence: whitespace-separated, lowercased as the training tokens were (used by
        :mod:`seqforge.predict`)."""
        return [w.lower() if self.lowercase else w for w in text.split()]

    @property
    def net_kwargs(self) -> dict[str, int]:
        self._require_fitted(self.vocab, self.tags)
        assert self.vocab is not None and self.tags is not None
        return {"vocab_size": len(self.vocab), "num_classes": len(self.tags)}

    def state_dict(self) -> dict[str, Any]:
        """Plain data: ``{"vocab": {"tokens": [...]}, "tags": [...]}``."""
        self._require_fitted(self.vocab, self.tags)
        assert self.vocab is not None
        return {"vocab": self.vocab.state_dict(), "tags": self.tags}

    def load_fitted_state(self, state_dict: dict[str, Any]) -> None:
        self.vocab = Vocabulary.from_state_dict(state_dict["vocab"])
        self.tags = list(state_dict["tags"])
