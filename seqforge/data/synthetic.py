"""Small generated tasks every topology can learn, as seeded LightningDataModules (tiny by default).

| datamodule | topology | batch |
|---|---|---|
| :class:`AddingProblemDataModule` | many-to-one regression | ``(x (B,T,2), lengths, y (B,))`` |
| :class:`ParityDataModule` | many-to-one classification | ``(ids (B,T), lengths, y (B,))`` |
| :class:`EchoTaggingDataModule` | tagging | ``(ids (B,T), lengths, tags (B,T))`` |
| :class:`ReverseDataModule`, :class:`SortDataModule` | seq2seq | ``(src, src_lengths, tgt, tgt_lengths)`` |
| :class:`ConditionalPatternDataModule` | one-to-many | ``(cond (B,), y, y_lengths)`` |
| :class:`CharStreamDataModule` | language model | ``(x (B,T), y (B,T))`` contiguous streams |
| :class:`SineForecastDataModule` | forecasting | ``(history (B,W,1), lengths, target (B,H))`` |

Token ids follow the shared convention ``pad=0, bos=1, eos=2, unk=3``; symbols start at id 4.
The same ``seed`` always gives the same data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from seqforge.data.base import SplitDataModule, check_positive_int
from seqforge.data.collate import collate_pairs, collate_tagged, pad_sequences
from seqforge.data.series import SeriesDataModule
from seqforge.data.text import StreamDataModule

PAD, BOS, EOS, FIRST_SYMBOL = 0, 1, 2, 4


class SyntheticDataModule(SplitDataModule):
    """Base: ``num_train``/``num_val``/``num_test`` samples made by :meth:`make` from one seeded generator.

    ``max_train_length`` (``None``: no limit) keeps only training samples whose first element (the input
    sequence) has at most that many steps; :class:`seqforge.tasks.callbacks.LengthCurriculum` grows it.
    """

    def __init__(
        self, num_train: int, num_val: int, num_test: int, batch_size: int, seed: int, num_workers: int
    ) -> None:
        super().__init__(batch_size, num_workers)
        owner = type(self).__name__
        self.sizes = {
            "train": check_positive_int(owner, "num_train", num_train),
            "val": check_positive_int(owner, "num_val", num_val),
            "test": check_positive_int(owner, "num_test", num_test),
        }
        self.seed = seed
        self.max_train_length: int | None = None

    def make(self, n: int, generator: torch.Generator) -> list[Any]:
        """``n`` samples drawn with ``generator``."""
        raise NotImplementedError

    def build(self) -> dict[str, list[Any]]:
        generator = torch.Generator().manual_seed(self.seed)
        return {split: self.make(n, generator) for split, n in self.sizes.items()}

    def train_dataloader(self) -> DataLoader:
        if self.max_train_length is None:
            return super().train_dataloader()
        if not self.splits:
            raise RuntimeError(f"{type(self).__name__}: call setup() before asking for a dataloader")
        samples = [s for s in self.splits["train"] if s[0].shape[0] <= self.max_train_length]
        if not samples:
            raise ValueError(f"{type(self).__name__}: no training sample is as short as max_train_length="
                             f"{self.max_train_length}")
        return self.make_loader(samples, shuffle=True)

    def _lengths(self, n: int, low: int, high: int, generator: torch.Generator) -> list[int]:
        return torch.randint(low, high + 1, (n,), generator=generator).tolist()


def _check_range(owner: str, low: int, high: int) -> None:
    check_positive_int(owner, "min_len", low)
    if high < low:
        raise ValueError(f"{owner}: max_len must be >= min_len, got min_len={low}, max_len={high}")


class AddingProblemDataModule(SyntheticDataModule):
    """The adding problem (Hochreiter & Schmidhuber 1997): sum the two marked numbers of a long sequence.

    Each step has 2 features: a value ``U(0, 1)`` and a marker that is 1 at exactly two steps (one in
    each half of the sequence). The target is the sum of the two marked values; predicting the mean (1.0)
    gives MSE about 0.167, so MSE < 0.01 means the model remembers across ``seq_len`` steps.
    ``net_kwargs = {"input_size": 2, "output_size": 1}``.
    """

    def __init__(
        self, seq_len: int = 50, num_train: int = 2000, num_val: int = 200, num_test: int = 200,
        batch_size: int = 32, seed: int = 0, num_workers: int = 0,
    ) -> None:  # fmt: skip
        super().__init__(num_train, num_val, num_test, batch_size, seed, num_workers)
        self.seq_len = check_positive_int(type(self).__name__, "seq_len", seq_len)
        if seq_len < 2:
            raise ValueError(f"AddingProblemDataModule: seq_len must be >= 2, got {seq_len}")

    def make(self, n: int, generator: torch.Generator) -> list[tuple[Tensor, Tensor]]:
        T, half = self.seq_len, self.seq_len // 2
        values = torch.rand(n, T, generator=generator)
        markers = torch.zeros(n, T)
        rows = torch.arange(n)
        markers[rows, torch.randint(0, half, (n,), generator=generator)] = 1.0
        markers[rows, torch.randint(half, T, (n,), generator=generator)] = 1.0
        x = torch.stack([values, markers], dim=-1)  # (n, T, 2)
        y = (values * markers).sum(dim=1)  # (n,)
        return list(zip(x, y))

    @property
    def net_kwargs(self) -> dict[str, int]:
        return {"input_size": 2, "output_size": 1}


class ParityDataModule(SyntheticDataModule):
    """Is the number of ones in a bit string odd? Bits are tokens ``4`` (zero) and ``5`` (one).

    Lengths are uniform in ``[min_len, max_len]``. ``net_kwargs = {"vocab_size": 6, "num_classes": 2}``.
    """

    def __init__(
        self, min_len: int = 2, max_len: int = 8, num_train: int = 1000, num_val: int = 200, num_test: int = 200,
        batch_size: int = 32, seed: int = 0, num_workers: int = 0,
    ) -> None:  # fmt: skip
        super().__init__(num_train, num_val, num_test, batch_size, seed, num_workers)
        _check_range(type(self).__name__, min_len, max_len)
        self.min_len, self.max_len = min_len, max_len

    def make(self, n: int, generator: torch.Generator) -> list[tuple[Tensor, Tensor]]:
        samples = []
        for length in self._lengths(n, self.min_len, self.max_len, generator):
            bits = torch.randint(0, 2, (length,), generator=generator)
            samples.append((bits + FIRST_SYMBOL, bits.sum() % 2))
        return samples

    @property
    def net_kwargs(self) -> dict[str, int]:
        return {"vocab_size": FIRST_SYMBOL + 2, "num_classes": 2}


class EchoTaggingDataModule(SyntheticDataModule):
    """Tag each step with the symbol seen ``delay`` steps earlier (tag 0 for the first ``delay`` steps).

    Symbols ``s`` in ``[0, num_symbols)`` are tokens ``4 + s`` and tags ``1 + s``. Padded tags are -100.
    ``net_kwargs = {"vocab_size": 4 + num_symbols, "num_classes": 1 + num_symbols}``.
    """

    collate_fn = staticmethod(collate_tagged)

    def __init__(
        self, num_symbols: int = 5, delay: int = 1, min_len: int = 3, max_len: int = 10, num_train: int = 1000,
        num_val: int = 200, num_test: int = 200, batch_size: int = 32, seed: int = 0, num_workers: int = 0,
    ) -> None:  # fmt: skip
        super().__init__(num_train, num_val, num_test, batch_size, seed, num_workers)
        owner = type(self).__name__
        _check_range(owner, min_len, max_len)
        self.num_symbols = check_positive_int(owner, "num_symbols", num_symbols)
        self.delay = check_positive_int(owner, "delay", delay)
        self.min_len, self.max_len = min_len, max_len

    def make(self, n: int, generator: torch.Generator) -> list[tuple[Tensor, Tensor]]:
        samples = []
        for length in self._lengths(n, self.min_len, self.max_len, generator):
            symbols = torch.randint(0, self.num_symbols, (length,), generator=generator)
            tags = torch.zeros(length, dtype=torch.long)
            tags[self.delay :] = symbols[: max(length - self.delay, 0)] + 1
            samples.append((symbols + FIRST_SYMBOL, tags))
        return samples

    @property
    def net_kwargs(self) -> dict[str, int]:
        return {"vocab_size": FIRST_SYMBOL + self.num_symbols, "num_classes": 1 + self.num_symbols}


class SequenceTransformDataModule(SyntheticDataModule):
    """Seq2seq over random symbol strings: the target is ``BOS + transform(source) + EOS``.

    ``transform`` is ``"reverse"`` or ``"sort"``; sources have lengths in ``[min_len, max_len]`` over
    ``num_symbols`` symbols (ids ``4 ...``). ``net_kwargs``: ``src_vocab_size``, ``tgt_vocab_size``
    (both ``4 + num_symbols``), ``pad_id``, ``bos_id``, ``eos_id``.
    """

    collate_fn = staticmethod(collate_pairs)
    TRANSFORMS = ("reverse", "sort")

    def __init__(
        self, transform: str = "reverse", num_symbols: int = 8, min_len: int = 2, max_len: int = 8,
        num_train: int = 2000, num_val: int = 200, num_test: int = 200, batch_size: int = 32, seed: int = 0,
        num_workers: int = 0,
    ) -> None:  # fmt: skip
        super().__init__(num_train, num_val, num_test, batch_size, seed, num_workers)
        owner = type(self).__name__
        if transform not in self.TRANSFORMS:
            raise ValueError(f"{owner}: transform must be one of {self.TRANSFORMS}, got {transform!r}")
        _check_range(owner, min_len, max_len)
        self.transform = transform
        self.num_symbols = check_positive_int(owner, "num_symbols", num_symbols)
        self.min_len, self.max_len = min_len, max_len

    def make(self, n: int, generator: torch.Generator) -> list[tuple[Tensor, Tensor]]:
        samples = []
        for length in self._lengths(n, self.min_len, self.max_len, generator):
            src = torch.randint(0, self.num_symbols, (length,), generator=generator) + FIRST_SYMBOL
            out = src.flip(0) if self.transform == "reverse" else src.sort().values
            samples.append((src, torch.cat([torch.tensor([BOS]), out, torch.tensor([EOS])])))
        return samples

    def decode(self, ids: Sequence[int]) -> str:
        """Readable string of a target: symbols as letters ``a, b, ...``, stopping at EOS, skipping pad/BOS."""
        chars = []
        for i in ids:
            if int(i) == EOS:
                break
            if int(i) >= FIRST_SYMBOL:
                chars.append(chr(ord("a") + int(i) - FIRST_SYMBOL))
        return "".join(chars)

    @property
    def net_kwargs(self) -> dict[str, int]:
        vocab = FIRST_SYMBOL + self.num_symbols
        return {"src_vocab_size": vocab, "tgt_vocab_size": vocab, "pad_id": PAD, "bos_id": BOS, "eos_id": EOS}


class ReverseDataModule(SequenceTransformDataModule):
    """Reverse a symbol string (see :class:`SequenceTransformDataModule`)."""

    def __init__(
        self, num_symbols: int = 8, min_len: int = 2, max_len: int = 8, num_train: int = 2000, num_val: int = 200,
        num_test: int = 200, batch_size: int = 32, seed: int = 0, num_workers: int = 0,
    ) -> None:  # fmt: skip
        super().__init__("reverse", num_symbols, min_len, max_len, num_train, num_val, num_test, batch_size, seed,
                         num_workers)  # fmt: skip


class SortDataModule(SequenceTransformDataModule):
    """Sort a symbol string (see :class:`SequenceTransformDataModule`)."""

    def __init__(
        self, num_symbols: int = 8, min_len: int = 2, max_len: int = 8, num_train: int = 2000, num_val: int = 200,
        num_test: int = 200, batch_size: int = 32, seed: int = 0, num_workers: int = 0,
    ) -> None:  # fmt: skip
        super().__init__("sort", num_symbols, min_len, max_len, num_train, num_val, num_test, batch_size, seed,
                         num_workers)  # fmt: skip


def collate_conditional(batch: Sequence[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor, Tensor]:
    """``(condition, sequence)`` pairs -> ``(cond (B,) or (B, C), y (B, T[, F]) padded with 0, lengths (B,))``."""
    conds, ys = zip(*batch)
    y, lengths = pad_sequences(ys, 0)
    return torch.stack(list(conds)), y, lengths


class ConditionalPatternDataModule(SyntheticDataModule):
    """Class-specific sequences for one-to-many generation.

    Class ``c`` of ``num_conditions`` always produces the same pattern: with ``output="tokens"`` the
    symbols ``(c + k * (c + 1)) mod num_symbols`` for ``k < min_len + c`` (ids from 4, wrapped in
    ``BOS ... EOS``); with ``output="real"`` the curve ``sin(2 pi (c + 1) k / seq_len)`` of ``seq_len``
    steps, shape ``(T, 1)``, plus Gaussian ``noise``. Samples draw the class uniformly.

    ``net_kwargs``: ``num_conditions`` and ``vocab_size``/``pad_id``/``bos_id``/``eos_id`` (tokens) or
    ``output_size=1`` (real).
    """

    collate_fn = staticmethod(collate_conditional)

    def __init__(
        self, num_conditions: int = 3, num_symbols: int = 6, min_len: int = 3, output: str = "tokens",
        seq_len: int = 16, noise: float = 0.0, num_train: int = 600, num_val: int = 60, num_test: int = 60,
        batch_size: int = 32, seed: int = 0, num_workers: int = 0,
    ) -> None:  # fmt: skip
        super().__init__(num_train, num_val, num_test, batch_size, seed, num_workers)
        owner = type(self).__name__
        if output not in ("tokens", "real"):
            raise ValueError(f"{owner}: output must be 'tokens' or 'real', got {output!r}")
        self.num_conditions = check_positive_int(owner, "num_conditions", num_conditions)
        self.num_symbols = check_positive_int(owner, "num_symbols", num_symbols)
        self.min_len = check_positive_int(owner, "min_len", min_len)
        self.seq_len = check_positive_int(owner, "seq_len", seq_len)
        self.output, self.noise = output, float(noise)

    def pattern(self, c: int) -> Tensor:
        """The noise-free target of class ``c``: ids ``(L,)`` with BOS/EOS, or values ``(seq_len, 1)``."""
        if self.output == "tokens":
            symbols = [(c + k * (c + 1)) % self.num_symbols + FIRST_SYMBOL for k in range(self.min_len + c)]
            return torch.tensor([BOS, *symbols, EOS])
        k = torch.arange(self.seq_len, dtype=torch.float32)
        return torch.sin(2 * math.pi * (c + 1) * k / self.seq_len).unsqueeze(-1)

    def make(self, n: int, generator: torch.Generator) -> list[tuple[Tensor, Tensor]]:
        classes = torch.randint(0, self.num_conditions, (n,), generator=generator)
        samples = []
        for c in classes:
            y = self.pattern(int(c))
            if self.output == "real" and self.noise > 0:
                y = y + self.noise * torch.randn(y.shape, generator=generator)
            samples.append((c, y))
        return samples

    @property
    def net_kwargs(self) -> dict[str, int]:
        if self.output == "real":
            return {"num_conditions": self.num_conditions, "output_size": 1}
        return {
            "num_conditions": self.num_conditions, "vocab_size": FIRST_SYMBOL + self.num_symbols,
            "pad_id": PAD, "bos_id": BOS, "eos_id": EOS,
        }  # fmt: skip


_WORDS = {
    "det": ["the", "a"],
    "adj": ["small", "red", "old", ""],
    "noun": ["cat", "dog", "bird", "fox"],
    "verb": ["sees", "likes", "chases"],
}


class CharStreamDataModule(StreamDataModule):
    """Character language modeling over text from a tiny grammar (``det adj noun verb det adj noun.``).

    ``num_chars`` characters are generated with ``seed`` and split 80/10/10 in order; each part is cut
    into ``batch_size`` contiguous streams read in blocks of ``block_size`` (the shared LM batch contract,
    as :class:`seqforge.data.text.StreamDataModule` does). ``net_kwargs = {"vocab_size": V}``.
    """

    def __init__(
        self, num_chars: int = 20000, block_size: int = 32, batch_size: int = 16, seed: int = 0,
        num_workers: int = 0,
    ) -> None:  # fmt: skip
        super().__init__(block_size, batch_size, num_workers)
        self.num_chars = check_positive_int(type(self).__name__, "num_chars", num_chars)
        self.seed = seed

    def text(self) -> str:
        """The generated text (``num_chars`` characters, deterministic in ``seed``)."""
        rng = np.random.default_rng(self.seed)
        sentences, size = [], 0
        while size < self.num_chars:
            words = [rng.choice(_WORDS[part]) for part in ("det", "adj", "noun", "verb", "det", "adj", "noun")]
            sentence = " ".join(w for w in words if w) + ". "
            sentences.append(sentence)
            size += len(sentence)
        return "".join(sentences)[: self.num_chars]

    def parts(self) -> dict[str, str]:
        text = self.text()
        a, b = int(0.8 * len(text)), int(0.9 * len(text))
        return {"train": text[:a], "val": text[a:b], "test": text[b:]}


class SineForecastDataModule(SeriesDataModule):
    """Forecast a noisy two-tone series ``10 + 3 sin(2 pi t / 20) + 1.5 sin(2 pi t / 7) + noise``.

    A :class:`seqforge.data.series.SeriesDataModule` over a generated series of ``length`` points: windows
    of ``window`` points predict the next ``horizon``, the targets are split in time (70/15/15), the
    standard scaler is fitted on the training part only, and ``mase_scale`` is the training part's mean
    absolute one-step difference (original units). ``net_kwargs = {"input_size": 1, "horizon": H}``.
    """

    def __init__(
        self, window: int = 24, horizon: int = 6, length: int = 600, noise: float = 0.1, batch_size: int = 32,
        seed: int = 0, num_workers: int = 0,
    ) -> None:  # fmt: skip
        owner = type(self).__name__
        self.length = check_positive_int(owner, "length", length)
        if length < 4 * (window + horizon):
            raise ValueError(f"{owner}: length={length} is too short for window={window} + horizon={horizon}; "
                             f"need at least {4 * (window + horizon)}")
        val_start, test_start = int(0.7 * length), int(0.85 * length)
        super().__init__(
            window=window, horizon=horizon, test_size=length - test_start, val_size=test_start - val_start,
            scaler="standard", season=1, batch_size=batch_size, num_workers=num_workers,
        )  # fmt: skip
        self.noise, self.seed = float(noise), seed

    def load_series(self) -> np.ndarray:
        t = np.arange(self.length, dtype=np.float64)
        rng = np.random.default_rng(self.seed)
        clean = 10 + 3 * np.sin(2 * np.pi * t / 20) + 1.5 * np.sin(2 * np.pi * t / 7)
        return clean + self.noise * rng.standard_normal(self.length)
