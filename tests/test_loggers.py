"""MLflow (file store) and W&B (offline) beside TensorBoard and CSV: metrics and pictures reach every store.

Real libraries writing into ``tmp_path``, nothing mocked and no network. Needs the ``loggers`` extra
(part of ``dev``); without it these tests are skipped.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from seqforge.tasks.plots import PictureLogger, curves_figure
from seqforge.utils.config import CONFIG_DIR, compose_config

REPO = CONFIG_DIR.parent
QUIET = ["extras.print_config=false", "callbacks.rich_progress_bar=null", "callbacks.model_summary=null"]
PNG = b"\x89PNG\r\n\x1a\n"


def offline_env(tmp_path: Path) -> dict[str, str]:
    """W&B offline with its settings and caches inside ``tmp_path``; no MLflow server from the environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "MLFLOW_"))}
    env.update(WANDB_MODE="offline", WANDB_SILENT="true", WANDB_DIR=str(tmp_path / "wandb_home"),
               WANDB_CACHE_DIR=str(tmp_path / "wandb_cache"), WANDB_CONFIG_DIR=str(tmp_path / "wandb_config"),
               WANDB_DATA_DIR=str(tmp_path / "wandb_data"))  # fmt: skip
    return env


def wandb_records(path: Path) -> list[Any]:
    """The protobuf records of a W&B run file (``run-<id>.wandb``), read without a W&B server.

    The file is a 7-byte ``:W&B`` header, then LevelDB-log blocks of 32 KiB: each chunk has a 7-byte header
    (checksum, little-endian length, kind) and a record is one FULL chunk or FIRST, MIDDLE..., LAST.
    """
    from wandb.proto.wandb_internal_pb2 import Record

    data = path.read_bytes()
    assert data[:4] == b":W&B", data[:7]
    records, pos, pending = [], 7, b""
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:  # a block never starts a chunk header it cannot hold: zero padding
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST
            record = Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def wandb_history(run_dir: Path) -> list[dict[str, Any]]:
    """Every ``wandb.log`` row of the one offline run under ``run_dir``, values decoded from JSON."""
    (run_file,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    return [
        {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
        for record in wandb_records(run_file)
        if record.WhichOneof("record_type") == "history"
    ]


@pytest.fixture(scope="module")
def forecast_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """``scripts/train.py`` for 2 short epochs of sine forecasting with MLflow and W&B (plots each epoch)."""
    pytest.importorskip("mlflow", reason="the loggers extra is not installed")
    pytest.importorskip("wandb", reason="the loggers extra is not installed")
    tmp_path = tmp_path_factory.mktemp("loggers")
    env = offline_env(tmp_path)
    env.update(SEQFORGE_LOG_DIR=str(tmp_path / "logs"), OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))  # fmt: skip
    args = [sys.executable, str(REPO / "scripts" / "train.py"), "+experiment=sine_forecast", "logger=[mlflow,wandb]",
            "trainer.max_epochs=2", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
            "trainer.limit_test_batches=1", *QUIET]  # fmt: skip
    result = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "logs" / "sine_forecast" / "runs").iterdir()
    return tmp_path / "logs", json.loads((run_dir / "metrics.json").read_text())


def test_mlflow_file_store_holds_metrics_params_and_forecast_plots(forecast_run: tuple[Path, dict[str, Any]]) -> None:
    log_dir, metrics = forecast_run
    (experiment,) = [p.parent for p in (log_dir / "mlflow").glob("*/meta.yaml") if "sine_forecast" in p.read_text()]
    (run,) = [p.parent for p in experiment.glob("*/meta.yaml")]
    val_mae = [line.split() for line in (run / "metrics" / "val" / "mae").read_text().splitlines()]
    assert len(val_mae) == 2  # one value per epoch: "<timestamp> <value> <step>"
    assert math.isclose(float(val_mae[-1][1]), metrics["val/mae"], rel_tol=1e-6)
    test_mae = (run / "metrics" / "test" / "mae").read_text().split()
    assert math.isclose(float(test_mae[1]), metrics["test/mae"], rel_tol=1e-6)
    assert (run / "params" / "model" / "net" / "rnn" / "cell").read_text() == "lstm"
    for example in ("forecast_0", "forecast_1"):
        plots = sorted((run / "artifacts" / "val" / example).glob("step_*.png"))
        assert len(plots) == 2, plots  # one per validation epoch
        assert all(p.read_bytes()[:8] == PNG for p in plots)


def test_wandb_offline_run_holds_metrics_and_forecast_images(forecast_run: tuple[Path, dict[str, Any]]) -> None:
    log_dir, metrics = forecast_run
    (run_dir,) = (log_dir / "sine_forecast" / "runs").iterdir()
    rows = wandb_history(run_dir)
    val_mae = [row["val/mae"] for row in rows if "val/mae" in row]
    assert len(val_mae) == 2 and math.isclose(val_mae[-1], metrics["val/mae"], rel_tol=1e-6)
    assert [row["test/mae"] for row in rows if "test/mae" in row] == [pytest.approx(metrics["test/mae"], rel=1e-6)]
    images = [row["val/forecast_0/filenames"] for row in rows if "val/forecast_0/filenames" in row]
    assert len(images) == 2  # one per validation epoch
    (offline,) = run_dir.glob("wandb/offline-run-*")
    for (name,) in images:
        assert (offline / "files" / name).read_bytes()[:8] == PNG


def test_picture_logger_sends_text_and_figures_to_each_kind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mlflow", reason="the loggers extra is not installed")
    pytest.importorskip("wandb", reason="the loggers extra is not installed")
    from lightning.pytorch.loggers import MLFlowLogger, WandbLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for key, value in offline_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # what configs/logger/mlflow.yaml sets for a job
    tensorboard = TensorBoardLogger(tmp_path / "tb", name="", version="")
    mlflow = MLFlowLogger(experiment_name="pictures", save_dir=str(tmp_path / "mlflow"))
    wandb_logger = WandbLogger(project="pictures", save_dir=str(tmp_path), offline=True)
    pictures = PictureLogger([CSVLogger(tmp_path / "csv"), tensorboard, mlflow, wandb_logger])
    assert pictures.loggers == [tensorboard, mlflow, wandb_logger]  # CSV takes no pictures
    figure = curves_figure([[0.0, 1.0, 0.5]], ["a"], title="generated")
    pictures.add_figure("val/samples", figure, global_step=3)
    pictures.add_text("val/text", "`first line`  \n`second line`", global_step=3)
    tensorboard.experiment.flush()
    wandb_logger.experiment.finish()

    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    assert [e.step for e in events.Images("val/samples")] == [3]
    assert [e.step for e in events.Tensors("val/text/text_summary")] == [3]
    artifacts = Path(mlflow.experiment.get_run(mlflow.run_id).info.artifact_uri.removeprefix("file:"))
    assert (artifacts / "val" / "samples" / "step_000003.png").read_bytes()[:8] == PNG
    assert (artifacts / "val" / "text" / "step_000003.txt").read_text() == "`first line`  \n`second line`"
    (offline,) = tmp_path.glob("wandb/offline-run-*")
    (table_file,) = offline.glob("files/media/table/val/text_*.table.json")
    assert json.loads(table_file.read_text())["data"] == [["`first line`"], ["`second line`"]]


def test_a_csv_only_run_has_no_picture_logger(tmp_path: Path) -> None:
    assert not PictureLogger([CSVLogger(tmp_path)])  # the task then skips building its figures
    assert PictureLogger([CSVLogger(tmp_path), TensorBoardLogger(tmp_path)])


def test_logger_configs_compose_alone_and_together(tmp_path: Path) -> None:
    cfg = compose_config("train", ["logger=[tensorboard,csv,mlflow,wandb]"], tmp_path)
    assert sorted(cfg.logger) == ["csv", "mlflow", "tensorboard", "wandb"]
    assert cfg.logger.wandb.offline is True and cfg.logger.wandb.save_dir == str(tmp_path)
    assert cfg.logger.mlflow.save_dir.endswith("/mlflow") and cfg.logger.mlflow.experiment_name == "train"
    assert cfg.hydra.job.env_set.MLFLOW_ALLOW_FILE_STORE == "true"
