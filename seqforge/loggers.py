"""A CSV logger whose ``metrics.csv`` a resumed run continues instead of deleting.

Lightning's ``CSVLogger`` deletes an existing ``metrics.csv`` as soon as a run writes into its folder again,
so a run resumed in its own folder lost the rows of the part before the interruption. With
:class:`CSVLogger` and :class:`CSVRowsInCheckpoint` (``train()`` adds the callback), every checkpoint first
writes the rows logged so far to the file and records how many there are; a run resumed from that
checkpoint keeps those rows and appends its own. Of the rows written after the checkpoint (before a
crash), those of the steps the resumed run logs again are dropped, so each row is in the file once.
"""

from __future__ import annotations

import csv
import os
from typing import Any, cast

import lightning as L
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

CSV_ROWS = "csv_rows"  # checkpoint key: {metrics.csv path: rows written when the checkpoint was saved}


class _ContinuedWriter(ExperimentWriter):
    """Lightning's writer that, on ``resume``, continues the existing ``metrics.csv`` instead of deleting it.

    The first ``keep_rows`` rows (all with ``None``) stay. The rows after them were logged after the
    checkpoint: those with a step below the first step this run logs stay too (an epoch's train means are
    logged after its end-of-epoch checkpoint, and a resumed run does not log them again), the others are
    logged again by this run and go. ``rows`` counts the rows in the file.
    """

    def __init__(self, log_dir: str, resume: bool, keep_rows: int | None) -> None:
        self.resume, self.keep_rows, self.rows = resume, keep_rows, 0
        self._after: list[dict[str, str]] | None = None  # rows after the checkpoint, until the first log_metrics
        super().__init__(log_dir=log_dir)  # calls _check_log_dir_exists

    def _check_log_dir_exists(self) -> None:
        if not self.resume:
            super()._check_log_dir_exists()  # a new run in a used folder: Lightning's warning, a new file
            return
        if not self._fs.isfile(self.metrics_file_path):
            return
        with self._fs.open(self.metrics_file_path, "r", newline="") as file:
            reader = csv.DictReader(file)
            rows = list(reader)
            keys = list(reader.fieldnames or [])
        kept = rows if self.keep_rows is None else rows[: self.keep_rows]
        self._after = rows[len(kept):]
        with self._fs.open(self.metrics_file_path, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=keys)
            writer.writeheader()
            writer.writerows(kept)
        self.metrics_keys, self.rows = keys, len(kept)

    def log_metrics(self, metrics_dict: dict[str, float], step: int | None = None) -> None:
        after, self._after = self._after, None
        if after:  # the rows of steps before this one were not logged again: keep them, before this row
            self.metrics.extend(cast("dict[str, float]", {key: value for key, value in row.items() if value != ""})
                                for row in after if step is None or float(row["step"]) < step)  # as read
        super().log_metrics(metrics_dict, step)

    def save(self) -> None:
        pending = len(self.metrics)
        super().save()
        self.rows += pending


class CSVLogger(LightningCSVLogger):
    """Lightning's ``CSVLogger`` (``<save_dir>/<name>/<version>/metrics.csv``, same arguments) that a resumed
    run continues: call :meth:`continue_from` before anything is logged; without it, as Lightning's."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._resume, self._keep_rows = False, cast("int | None", None)

    def continue_from(self, rows: int | None) -> None:
        """Keep the first ``rows`` rows of the existing ``metrics.csv`` (``None``: all of them) and append.

        Raises:
            RuntimeError: the file was opened already (something was logged).
        """
        if self._experiment is not None:
            raise RuntimeError("CSVLogger.continue_from: call it before anything is logged")
        self._resume, self._keep_rows = True, rows

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuedWriter(self.log_dir, self._resume, self._keep_rows)
        return cast(ExperimentWriter, self._experiment)

    @property
    def rows_written(self) -> int:
        """Rows in ``metrics.csv`` (those kept from before a resume included), not counting unsaved ones."""
        return self._experiment.rows if isinstance(self._experiment, _ContinuedWriter) else 0

    @property
    def metrics_file(self) -> str:
        """The path of ``metrics.csv``."""
        return os.path.join(self.log_dir, ExperimentWriter.NAME_METRICS_FILE)


class CSVRowsInCheckpoint(L.Callback):
    """Before every checkpoint, write what each :class:`CSVLogger` logged so far and store the number of rows
    in its file: ``checkpoint["csv_rows"] = {metrics.csv path: rows}``."""

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if not trainer.is_global_zero:  # the other processes' loggers write nothing
            return
        rows = {}
        for logger in trainer.loggers:
            if isinstance(logger, CSVLogger):
                logger.save()
                rows[logger.metrics_file] = logger.rows_written
        checkpoint[CSV_ROWS] = rows
