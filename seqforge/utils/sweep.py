"""A Hydra callback that prepares the sweep folder and writes a summary of all jobs when a sweep ends.

Registered in ``configs/hydra/default.yaml``; active only for ``-m`` runs. ``trials.csv`` in the sweep
folder has one row per job: its number, status (``completed`` when the job wrote ``metrics.json``,
``failed`` otherwise), its overrides, and every float metric of its ``metrics.json``. Optuna sweeps also
keep ``optuna.db`` (the study, resumable) and the sweeper's ``optimization_results.yaml`` (best trial).
"""

from __future__ import annotations

import csv
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)

SUMMARY_FILE = "trials.csv"


def collect_jobs(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per job folder (a folder holding ``.hydra/overrides.yaml``) under ``sweep_dir``."""
    rows = []
    for overrides_file in sorted(sweep_dir.glob("*/.hydra/overrides.yaml")):
        job_dir = overrides_file.parent.parent
        overrides = yaml.safe_load(overrides_file.read_text(encoding="utf-8")) or []
        row: dict[str, Any] = {"job": job_dir.name, "status": "failed", "overrides": " ".join(overrides)}
        metrics_file = job_dir / "metrics.json"
        if metrics_file.is_file():
            metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
            row["status"] = "completed"
            row.update({k: v for k, v in metrics.items() if isinstance(v, float)})
        rows.append(row)
    rows.sort(key=lambda r: (len(r["job"]), r["job"]))
    return rows


def write_summary(sweep_dir: Path) -> Path:
    """Write ``trials.csv`` for the jobs under ``sweep_dir`` and return its path."""
    rows = collect_jobs(sweep_dir)
    columns = ["job", "status", "overrides"]
    columns += sorted({key for row in rows for key in row} - set(columns))
    path = sweep_dir / SUMMARY_FILE
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


class SweepSummary(Callback):
    """Create the sweep folder up front (Optuna's sqlite storage lives there) and summarize at the end."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        Path(config.hydra.sweep.dir).mkdir(parents=True, exist_ok=True)
        storage = config.hydra.sweeper.get("storage")
        if isinstance(storage, str) and storage.startswith("sqlite"):
            check_rdb_storage()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        path = write_summary(Path(config.hydra.sweep.dir))
        log.info(f"Sweep summary: {path}")


def check_rdb_storage() -> None:
    """Fail early and clearly when this optuna cannot use an SQL storage (optuna 2.x with SQLAlchemy 2.x)."""
    import optuna

    try:
        with tempfile.TemporaryDirectory() as folder:
            optuna.storages.RDBStorage(f"sqlite:///{folder}/check.db")
    except Exception as err:
        raise RuntimeError(
            f"optuna {optuna.__version__} cannot open an sqlite study storage here ({type(err).__name__}); "
            "optuna 2.x needs SQLAlchemy < 2: pip install 'sqlalchemy<2' 'alembic<1.14', or sweep without a "
            "storage file: hydra.sweeper.storage=null"
        ) from None
