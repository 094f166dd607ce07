"""UCR/UEA time-series classification: a ``.ts`` reader and a datamodule over the official splits."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seqforge.data.base import SplitDataModule, check_fraction, check_positive_int, package_data_path, read_lines
from seqforge.data.recipes import ucr_batch_size, ucr_recipe, ucr_val_fraction

# Classification problems shipped inside the sktime wheel (sktime/datasets/data/<Name>/).
UCR_DATASETS = (
    "ACSF1",
    "ArrowHead",
    "BasicMotions",
    "GunPoint",
    "ItalyPowerDemand",
    "JapaneseVowels",
    "OSULeaf",
    "PLAID",
)


def read_ts(path: str | os.PathLike[str]) -> tuple[list[np.ndarray], list[str]]:
    """Read a UCR/UEA ``.ts`` classification file.

    The header holds ``@name value`` lines (``@problemName``, ``@univariate``, ``@equalLength``,
    ``@classLabel true a b c`` ...) and ends at ``@data``; ``#`` lines are comments. Each data row holds
    the dimensions separated by ``:`` (values separated by ``,``) and the class label last. Series may
    differ in length between rows, but all dimensions of one row have the same length.
    Missing values (``?`` or ``NaN``) are refused with the file and line: impute them first.

    Returns:
        ``(series, labels)``: one float32 array ``(T_i, C)`` and one label string per row.
    """
    path = Path(path)
    lines = read_lines(path, "read_ts")
    declared: list[str] | None = None
    series: list[np.ndarray] = []
    labels: list[str] = []
    in_data = False
    for lineno, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"read_ts: {path}, line {lineno}"
        if not in_data:
            if not line.startswith("@"):
                raise ValueError(f"{where}: expected a '@' header line before @data, got {line[:40]!r}")
            key, _, value = line[1:].partition(" ")
            key, words = key.lower(), value.split()
            if key == "data":
                in_data = True
            elif key == "timestamps" and words[:1] == ["true"]:
                raise ValueError(f"{where}: time-stamped .ts files are not supported")
            elif key == "targetlabel" and words[:1] == ["true"]:
                raise ValueError(f"{where}: this is a regression problem (@targetLabel); a class label is needed")
            elif key == "classlabel":
                if words[:1] != ["true"] or len(words) < 2:
                    raise ValueError(f"{where}: expected '@classLabel true <labels...>', got {line!r}")
                declared = words[1:]
            continue
        if declared is None:
            raise ValueError(f"{where}: no '@classLabel true ...' header before @data")
        *dims, label = line.split(":")
        cut = "; the line looks cut off (a truncated file?)"
        if not dims:
            raise ValueError(f"{where}: expected '<values>:...:<label>', got {line[:40]!r}{cut}")
        if series and len(dims) != series[0].shape[1]:
            raise ValueError(f"{where}: ragged row with {len(dims)} dimensions, earlier rows have "
                             f"{series[0].shape[1]}{cut if len(dims) < series[0].shape[1] else ''}")
        if label.strip() not in declared:
            looks_cut = not label.strip() or "," in label or lineno == len(lines)
            raise ValueError(f"{where}: label {label.strip()[:40]!r} is not among the declared labels "
                             f"{declared}{cut if looks_cut else ''}")
        try:
            values = [[math.nan if v.strip() == "?" else float(v) for v in dim.split(",")] for dim in dims]
        except ValueError as err:
            raise ValueError(f"{where}: cannot parse a value ({err})") from None
        if len({len(v) for v in values}) != 1:
            raise ValueError(f"{where}: dimensions have different lengths {[len(v) for v in values]}")
        x = np.asarray(values, dtype=np.float64).T  # (T, C)
        if not np.isfinite(x).all():
            raise ValueError(f"{where}: missing or non-finite values ('?', NaN, inf); impute them first")
        series.append(x.astype(np.float32))
        labels.append(label.strip())
    if not series:
        raise ValueError(f"read_ts: {path} has no data rows")
    return series, labels


def _label_key(label: str) -> tuple[int, float | str]:
    """Numeric labels sort by value ("2" before "10"), others alphabetically after them."""
    try:
        return (0, float(label))
    except ValueError:
        return (1, label)


class UCRDataModule(SplitDataModule):
    """A UCR/UEA classification dataset with its official train/test split.

    Validation is carved from the training file (stratified by class, seeded); with ``val_fraction=0`` no
    series is held out and validation runs on the training series themselves (for sets too small to spare
    a meaningful validation part: the monitored values are then training values). Each channel is
    normalized with the mean and standard deviation of the training part only (all valid time steps).
    Class labels map to ``0..K-1`` in sorted order of the training labels.

    Args:
        name: dataset name; files are ``<name>_TRAIN.ts`` and ``<name>_TEST.ts``.
        path: folder holding those files; ``None`` reads the copy shipped in the sktime wheel
            (one of ``UCR_DATASETS``), located without importing sktime.
        batch_size: samples per batch; ``None``: derived from the number of training series
            (:func:`~seqforge.data.recipes.ucr_batch_size`).
        val_fraction: share of each class of the training file held out for validation, in ``[0, 1)`` (0: none,
            see above); ``None``: derived so that the smallest class has a validation series, or 0 for the
            smallest sets (:func:`~seqforge.data.recipes.ucr_val_fraction`).
        seed: seed of the validation split.
        num_workers: DataLoader workers.
        max_length: longest series accepted (``None``: any); a longer one is an error naming the file and
            its position, so memory use is bounded by configuration, not by surprises in the data.

    Batches: ``(x, lengths, y)`` with ``x`` float32 ``(B, T, C)`` zero-padded, ``lengths`` int64 ``(B,)``,
    ``y`` int64 ``(B,)``. ``net_kwargs = {"input_size": C, "num_classes": K}``.

    After ``setup()``, :meth:`recipe` gives the settings derived from the data (the run fills them into the
    config keys left ``null``; see :mod:`seqforge.data.recipes`).
    """

    name: str  # always set (LightningDataModule declares it Optional)

    def __init__(
        self,
        name: str = "JapaneseVowels",
        path: str | os.PathLike[str] | None = None,
        batch_size: int | None = 32,
        val_fraction: float | None = 0.2,
        seed: int = 0,
        num_workers: int = 0,
        max_length: int | None = None,
    ) -> None:
        super().__init__(1 if batch_size is None else batch_size, num_workers)
        self.derive_batch_size = batch_size is None
        self.max_length = None if max_length is None else check_positive_int("UCRDataModule", "max_length", max_length)
        if path is None and name not in UCR_DATASETS:
            raise ValueError(
                f"UCRDataModule: unknown dataset {name!r}; available offline: "
                f"{list(UCR_DATASETS)} (or pass path= to a folder holding <name>_TRAIN.ts and "
                "<name>_TEST.ts)"
            )
        self.name = name
        self.path = path
        self.val_fraction = None if val_fraction is None else check_fraction("UCRDataModule", "val_fraction",
                                                                             val_fraction, allow_zero=True)
        self.seed = int(seed)
        self.longest: int | None = None  # steps of the longest training series, set by setup()
        self.classes: list[str] | None = None
        self.mean: list[float] | None = None
        self.std: list[float] | None = None

    def files(self) -> tuple[Path, Path]:
        """Paths of the ``_TRAIN.ts`` and ``_TEST.ts`` files."""
        if self.path is None:
            folder = package_data_path("sktime", "datasets", "data", self.name)
        else:
            folder = Path(self.path)
        return folder / f"{self.name}_TRAIN.ts", folder / f"{self.name}_TEST.ts"

    def build(self) -> dict[str, list[tuple[torch.Tensor, torch.Tensor]]]:
        train_file, test_file = self.files()
        train_x, train_labels = read_ts(train_file)
        test_x, test_labels = read_ts(test_file)
        for file, series in ((train_file, train_x), (test_file, test_x)):
            too_long = [i for i, x in enumerate(series) if self.max_length is not None and len(x) > self.max_length]
            if too_long:
                raise ValueError(
                    f"UCRDataModule: series {too_long[0]} of {file} has {len(series[too_long[0]])} steps, "
                    f"more than max_length={self.max_length} ({len(too_long)} such series)"
                )
        if train_x[0].shape[1] != test_x[0].shape[1]:
            raise ValueError(
                f"UCRDataModule: {train_file} has {train_x[0].shape[1]} channels but "
                f"{test_file} has {test_x[0].shape[1]}"
            )
        if self.mean is not None and len(self.mean) != train_x[0].shape[1]:
            raise ValueError(
                f"UCRDataModule: the fitted state (from a checkpoint or an earlier setup) normalizes "
                f"{len(self.mean)} channels, but {train_file} has {train_x[0].shape[1]}"
            )
        if self.classes is None:
            self.classes = sorted(set(train_labels), key=_label_key)
        index = {label: i for i, label in enumerate(self.classes)}
        for file, labels in ((train_file, train_labels), (test_file, test_labels)):
            unseen = sorted(set(labels) - set(index), key=_label_key)
            if unseen:
                raise ValueError(
                    f"UCRDataModule: {file} has labels {unseen} never seen in training "
                    f"(training labels: {self.classes})"
                )
        train_y = np.array([index[label] for label in train_labels])
        if self.val_fraction is None:
            self.val_fraction = ucr_val_fraction(np.bincount(train_y).tolist())
        val_mask = self._validation_mask(train_y)
        if self.derive_batch_size:
            self.batch_size = ucr_batch_size(int((~val_mask).sum()))
        self.longest = max(len(x) for x in train_x)
        fit_x = [x for x, v in zip(train_x, val_mask, strict=True) if not v]
        val_x = [x for x, v in zip(train_x, val_mask, strict=True) if v]
        val_y = train_y[val_mask]
        if self.val_fraction == 0:  # nothing held out: validate on the training series
            val_x, val_y = fit_x, train_y
        if self.mean is None or self.std is None:
            steps = np.concatenate(fit_x).astype(np.float64)  # (sum of T_i, C)
            std = steps.std(axis=0)
            self.mean = steps.mean(axis=0).tolist()
            self.std = np.where(std > 0, std, 1.0).tolist()
        mean, std = np.asarray(self.mean), np.asarray(self.std)

        def samples(xs: list[np.ndarray], ys: np.ndarray) -> list[tuple[torch.Tensor, torch.Tensor]]:
            return [
                (torch.from_numpy(((x - mean) / std).astype(np.float32)), torch.tensor(int(y)))
                for x, y in zip(xs, ys, strict=True)
            ]

        test_y = np.array([index[label] for label in test_labels])
        return {
            "train": samples(fit_x, train_y[~val_mask]),
            "val": samples(val_x, val_y),
            "test": samples(test_x, test_y),
        }

    def recipe(self) -> dict[str, Any]:
        """Settings derived from the data (dotted config keys), after ``setup()``: batch size, validation share,
        epochs, wall-clock cap, early-stopping patience and the front end
        (:func:`~seqforge.data.recipes.ucr_recipe`)."""
        self._require_fitted(self.longest, self.classes)
        assert self.longest is not None and self.val_fraction is not None
        n_fit = len(self.splits["train"])
        return {
            "data.batch_size": self.batch_size,
            "data.val_fraction": self.val_fraction,
            **ucr_recipe(n_fit, self.batch_size, self.longest, held_out=self.val_fraction > 0),
        }

    def _validation_mask(self, y: np.ndarray) -> np.ndarray:
        """Stratified, seeded choice of validation samples: ``round(val_fraction * n_c)`` per class."""
        assert self.val_fraction is not None  # set in __init__ or derived by build()
        rng = np.random.default_rng(self.seed)
        mask = np.zeros(len(y), dtype=bool)
        if self.val_fraction == 0:
            return mask
        for c in np.unique(y):
            members = rng.permutation(np.flatnonzero(y == c))
            mask[members[: math.floor(self.val_fraction * len(members) + 0.5)]] = True
        if mask.all() or not mask.any():
            raise ValueError(
                f"UCRDataModule: val_fraction={self.val_fraction} leaves an empty train or "
                f"validation part for {len(y)} training samples"
            )
        return mask

    @property
    def net_kwargs(self) -> dict[str, int]:
        self._require_fitted(self.classes, self.mean)
        assert self.classes is not None and self.mean is not None
        return {"input_size": len(self.mean), "num_classes": len(self.classes)}

    def state_dict(self) -> dict[str, list]:
        """Plain-data fitted state: class names and per-channel normalization."""
        self._require_fitted(self.classes, self.mean, self.std)
        assert self.classes is not None and self.mean is not None and self.std is not None
        return {"classes": self.classes, "mean": self.mean, "std": self.std}

    def load_fitted_state(self, state_dict: dict[str, list]) -> None:
        self.classes, self.mean, self.std = state_dict["classes"], state_dict["mean"], state_dict["std"]
