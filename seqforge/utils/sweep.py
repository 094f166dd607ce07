"""A Hydra callback that prepares the sweep folder and writes a summary of all jobs however a sweep ends.

``SweepSummary`` is registered in ``configs/hydra/default.yaml``; active only for ``-m`` runs.
``trials.csv`` in the sweep folder has one row per job: its folder, status, the first line of its error,
its overrides, and every float metric of its ``metrics.json``. The status is

- ``completed``: the job wrote ``metrics.json`` with status ``completed``;
- ``failed``: the job raised; its full traceback is in ``<job folder>/error.txt``;
- ``pruned``: an Optuna trial stopped by its pruner (``optuna.TrialPruned``; the reason in
  ``<job folder>/pruned.txt`` and in the ``error`` column);
- ``interrupted``: the job started but the sweep ended inside it (SIGTERM, Ctrl-C); an interrupt in the
  test stage keeps the fit's metrics and ``metrics.json``'s status as its error;
- ``not run``: a grid job the sweep never started because it ended early.

The summary is written when the sweep finishes and also when it ends early: a failed grid job (Hydra's
basic sweeper raises once all jobs ran, so the sweep still exits non-zero) or an interrupt, which stops
the sweep before the next job starts. A process killed outright (SIGKILL) leaves no summary. Optuna
sweeps also keep ``optuna.db`` (the study, resumable), ``optimization_results.yaml`` and the plots
(``seqforge.utils.optuna_sweep``).
"""

from __future__ import annotations

import atexit
import csv
import json
import logging
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

import yaml
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

SUMMARY_FILE = "trials.csv"
ERROR_FILE = "error.txt"
PRUNED_FILE = "pruned.txt"
BASIC_SWEEPER = f"{BasicSweeper.__module__}.{BasicSweeper.__name__}"


def grid_jobs(config: DictConfig) -> list[list[str]] | None:
    """The override lists Hydra's basic sweeper will run for ``config``, in job order (``None`` for
    other sweepers, whose jobs are not known up front)."""
    sweeper = config.hydra.sweeper
    if sweeper.get("_target_") != BASIC_SWEEPER:
        return None
    params = [f"{key}={value}" for key, value in (sweeper.get("params") or {}).items()]
    arguments = [*params, *OmegaConf.to_container(config.hydra.overrides.task, resolve=False)]  # type: ignore[misc]
    hydra = GlobalHydra.instance()  # its config loader lists config groups, for glob() sweeps
    parser = OverridesParser.create(config_loader=hydra.config_loader() if hydra.is_initialized() else None)
    try:
        overrides = parser.parse_overrides(arguments)
        return [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]
    except HydraException as err:  # the sweeper reports it; the summary just cannot list unstarted jobs
        log.warning(f"Sweep summary: cannot list the sweep's jobs up front ({err})")
        return None


def stop_on_sigterm(signum: int, frame: Any) -> None:
    """The sweep process's SIGTERM handler: raise Lightning's ``SIGTERMException`` (what an interrupted
    training run raises), which ends the sweep before another job starts.

    A ``Trainer`` running in this process installs its own handler, which stops at the end of the batch
    and calls this one after it: then this one leaves the stop to Lightning. Without this handler a SIGTERM
    outside training (a job's setup, or a joblib sweep, whose process only waits) ends the process at once:
    no summary, and joblib's workers go on training.
    """
    if signal.getsignal(signal.SIGTERM) is stop_on_sigterm:
        raise SIGTERMException()


def error_line(error: BaseException) -> str:
    """``Type: first line of the message`` of an exception, and the same of its root cause, if any."""

    def first_line(err: BaseException) -> str:
        lines = str(err).strip().splitlines()
        return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__

    root = error
    while root.__cause__ is not None:
        root = root.__cause__
    return first_line(error) if root is error else f"{first_line(error)} (cause: {first_line(root)})"


def collect_jobs(sweep_dir: Path, planned: list[list[str]] | None = None) -> list[dict[str, Any]]:
    """One row per job folder (a folder holding ``.hydra/overrides.yaml``) under ``sweep_dir``, plus a
    ``not run`` row for each job of ``planned`` (override lists in job order) that has no folder."""
    rows = []
    started = set()
    for overrides_file in sorted(sweep_dir.glob("*/.hydra/overrides.yaml")):
        job_dir = overrides_file.parent.parent
        overrides = yaml.safe_load(overrides_file.read_text(encoding="utf-8")) or []
        started.add(tuple(overrides))
        row: dict[str, Any] = {"job": job_dir.name, "status": "interrupted", "overrides": " ".join(overrides)}
        metrics_file, error_file = job_dir / "metrics.json", job_dir / ERROR_FILE
        if metrics_file.is_file():  # also written, with the fit's metrics, when the test stage fails
            metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
            row.update({k: v for k, v in metrics.items() if isinstance(v, float)})
            if metrics.get("status", "completed") == "completed":
                row["status"] = "completed"
            else:
                row["error"] = metrics["status"]
        if error_file.is_file():
            row["status"] = "failed"
            row["error"] = error_file.read_text(encoding="utf-8").splitlines()[0]
        elif (job_dir / PRUNED_FILE).is_file():
            row["status"] = "pruned"
            row["error"] = (job_dir / PRUNED_FILE).read_text(encoding="utf-8").strip()
        rows.append(row)
    for num, overrides in enumerate(planned or []):
        if tuple(overrides) not in started:
            rows.append({"job": str(num), "status": "not run", "overrides": " ".join(overrides)})
    rows.sort(key=lambda r: (len(r["job"]), r["job"]))
    return rows


def write_summary(sweep_dir: Path, planned: list[list[str]] | None = None) -> Path:
    """Write ``trials.csv`` for the jobs under ``sweep_dir`` (and the ``planned`` ones) and return its path."""
    rows = collect_jobs(sweep_dir, planned)
    columns = ["job", "status", "error", "overrides"]
    columns += sorted({key for row in rows for key in row} - set(columns))
    path = sweep_dir / SUMMARY_FILE
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


class SweepSummary(Callback):
    """Create the sweep folder up front (Optuna's sqlite storage lives there), keep each failed job's
    traceback (a pruned trial's reason) in its folder, and write ``trials.csv`` when the sweep ends,
    normally or not."""

    def __init__(self) -> None:
        self.sweep_dir: Path | None = None
        self.planned: list[list[str]] | None = None
        self.pid = os.getpid()
        self.previous_sigterm_handler: Any = signal.SIG_DFL

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.sweep_dir = Path(config.hydra.sweep.dir)
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        self.planned = grid_jobs(config)
        self.pid = os.getpid()
        self.previous_sigterm_handler = signal.signal(signal.SIGTERM, stop_on_sigterm)
        # Hydra calls on_multirun_end only when the sweeper returns; an early end still gets its summary
        atexit.register(self.summarize_early_end)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if job_return.status != JobStatus.FAILED or config.hydra.mode != RunMode.MULTIRUN:
            return  # a single run prints its traceback (and a refused one leaves no folder to write into)
        output_dir = Path(config.hydra.runtime.output_dir)
        try:
            _ = job_return.return_value  # re-raises the job's exception
        except Exception as error:
            optuna = sys.modules.get("optuna")  # a job can only raise TrialPruned if optuna was imported
            if optuna is not None and isinstance(error, optuna.TrialPruned):
                (output_dir / PRUNED_FILE).write_text(error_line(error) + "\n", encoding="utf-8")
                return
            text = error_line(error) + "\n\n" + "".join(traceback.format_exception(error))
            (output_dir / ERROR_FILE).write_text(text, encoding="utf-8")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        atexit.unregister(self.summarize_early_end)
        signal.signal(signal.SIGTERM, self.previous_sigterm_handler)
        path = write_summary(Path(config.hydra.sweep.dir), self.planned)
        log.info(f"Sweep summary: {path}")

    def summarize_early_end(self) -> None:
        """At exit of a sweep that ended before its sweeper returned (a failed job, an interrupt)."""
        if os.getpid() != self.pid or self.sweep_dir is None or not self.sweep_dir.is_dir():
            return  # a forked worker, or a sweep folder removed since
        path = write_summary(self.sweep_dir, self.planned)
        log.warning(f"Sweep ended early; summary: {path}")

