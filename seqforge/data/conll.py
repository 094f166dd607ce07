"""CoNLL-style tagged text: ``token<space or TAB>...<space or TAB>tag`` lines, a blank line between sentences.

The first column is the token and the last the tag (columns in between, such as part-of-speech or chunk
tags, are ignored). ``-DOCSTART-`` lines (document markers of the CoNLL-2003 files) are not sentences and
are passed over; every other line counts. Tags are kept as written: BIO/BIOES repairs (an ``I-`` after
``O``) are those of :mod:`seqforge.tasks.entity_metrics`, applied when entities are read from tags.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from seqforge.data.base import SplitDataModule, check_positive_int, read_lines
from seqforge.data.collate import collate_tagged
from seqforge.data.vocab import Vocabulary


def read_conll(path: str | os.PathLike[str], owner: str) -> list[tuple[list[str], list[str]]]:
    """``(tokens, tags)`` for every sentence; a line with no tag column is an error naming file and line."""
    sentences: list[tuple[list[str], list[str]]] = []
    tokens: list[str] = []
    tags: list[str] = []
    for number, line in enumerate([*read_lines(path, owner), ""], start=1):
        fields = line.split()
        if not fields or fields[0] == "-DOCSTART-":
            if tokens:
                sentences.append((tokens, tags))
            tokens, tags = [], []
            continue
        if len(fields) < 2:
            raise ValueError(f"{owner}: {path}, line {number}, column 2: no tag after the token {fields[0]!r}; "
                             "expected token<space or TAB>tag")
        tokens.append(fields[0])
        tags.append(fields[-1])
    return sentences


class ConllDataModule(SplitDataModule):
    """Sequence tagging from CoNLL-style ``train_path``/``val_path``/``test_path`` files (see :func:`read_conll`).

    Args:
        max_vocab: most frequent training tokens kept (others ``unk``; ties by token); ``None`` keeps all.
        lowercase: lowercase tokens before the vocabulary lookup.

    A tag in the validation or test file that training never has is an error naming the file and line.
    Batches: ``(x, lengths, y)``: ``x`` int64 ``(B, T)`` token ids (pad 0), ``y`` ``(B, T)`` tag ids (tags
    sorted, padding ``-100``). ``net_kwargs = {"vocab_size": V, "num_classes": K}``; ``tags`` names the ids.
    """

    collate_fn = staticmethod(collate_tagged)

    def __init__(
        self,
        train_path: str | os.PathLike[str],
        val_path: str | os.PathLike[str],
        test_path: str | os.PathLike[str],
        max_vocab: int | None = 30000,
        lowercase: bool = False,
        batch_size: int = 32,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size, num_workers)
        if max_vocab is not None:
            check_positive_int(type(self).__name__, "max_vocab", max_vocab)
        self.paths = {"train": train_path, "val": val_path, "test": test_path}
        self.max_vocab, self.lowercase = max_vocab, bool(lowercase)
        self.vocab: Vocabulary | None = None
        self.tags: list[str] | None = None
        self.sentences: dict[str, list[tuple[list[str], list[str]]]] = {}

    def build(self) -> dict[str, list[tuple[torch.Tensor, torch.Tensor]]]:
        owner = type(self).__name__
        self.sentences = {split: read_conll(path, owner) for split, path in self.paths.items()}
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
            for number, (_, tags) in enumerate(self.sentences[split], start=1):
                unknown = [t for t in tags if t not in index]
                if unknown:
                    raise ValueError(f"{owner}: {self.paths[split]}, sentence {number}: tag {unknown[0]!r} is not in "
                                     f"the training file (tags: {self.tags})")
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
