"""Kill, interrupt and resume through the real entry point: a run killed with SIGKILL, or stopped by SIGTERM
or Ctrl-C anywhere in training or validation, and restarted with ``ckpt_path=last`` ends with the same
metrics as a run that was never interrupted, and its TensorBoard logs hold every step once. The
interrupted process exits with 128 + the signal."""

from __future__ import annotations

import json
import random
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_train import REPO, run_script

RUN = [
    "+experiment=parity_gru", "data.num_train=128", "data.num_val=64", "data.num_test=64",
    "model.net.rnn.num_layers=2", "model.net.rnn.dropout=0.3", "model.net.rnn.hidden_size=16", "trainer.max_epochs=4",
    "trainer.deterministic=true", "trainer.log_every_n_steps=1", "callbacks.early_stopping=null",
    "extras.print_config=false", "callbacks.rich_progress_bar=null", "callbacks.model_summary=null",
]  # fmt: skip  # 4 batches per epoch, 16 steps in all


def _train(run_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    args = [str(REPO / "scripts" / "train.py"), *RUN, f"hydra.run.dir={run_dir}", *extra]
    return run_script(args, run_dir.parent, timeout=300, extra_path=(str(REPO / "tests"),))


def _scalars(run_dir: Path, tag: str) -> dict[int, float]:
    values: dict[int, float] = {}
    for events in sorted((run_dir / "tensorboard").glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events))
        acc.Reload()
        if tag in acc.Tags()["scalars"]:
            values.update({e.step: e.value for e in acc.Scalars(tag)})
    return values


def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    straight = _train(tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr[-3000:]

    crashed = _train(tmp_path / "crashed", "+callbacks.kill._target_=helpers.kill_switch.KillAtStep",
                     "+callbacks.kill.step=10")  # fmt: skip  # epoch 2, batch 2
    assert crashed.returncode == -signal.SIGKILL
    last = tmp_path / "crashed" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] == 1  # the last completed epoch
    assert not (tmp_path / "crashed" / "metrics.json").exists()
    steps_before = set(_scalars(tmp_path / "crashed", "val/loss"))

    resumed = _train(tmp_path / "crashed", "ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    b = json.loads((tmp_path / "crashed" / "metrics.json").read_text())
    for key in ("val/loss", "val/acc", "test/acc", "test/loss"):
        assert b[key] == pytest.approx(a[key], rel=1e-6, abs=1e-7), key
    steps_after = set(_scalars(tmp_path / "crashed", "val/loss"))
    assert steps_before == {3, 7} and steps_before < steps_after  # nothing logged before the crash is lost
    assert max(steps_after) == max(_scalars(tmp_path / "straight", "val/loss"))


def _metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def _assert_same_result(resumed: Path, straight: Path) -> None:
    a, b = _metrics(straight), _metrics(resumed)
    for key in ("val/loss", "val/acc", "val/acc_best", "test/acc", "test/loss"):
        assert b[key] == pytest.approx(a[key], rel=1e-6, abs=1e-7), key
    # TensorBoard: every training step and every validation epoch logged once, as in the uninterrupted run
    for tag in ("train/loss_step", "val/loss", "val/acc"):
        steps = []
        for events in sorted((resumed / "tensorboard").glob("events.out.tfevents.*")):
            acc = EventAccumulator(str(events))
            acc.Reload()
            steps += [e.step for e in acc.Scalars(tag)] if tag in acc.Tags()["scalars"] else []
        assert sorted(steps) == sorted(_scalars(straight, tag)), tag


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    result = _train(run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def _interrupt_and_resume(run_dir: Path, signum: int, step: int, val_batch: int | None = None) -> None:
    signal_at = ["+callbacks.signal._target_=helpers.signal_switch.SignalAt", f"+callbacks.signal.step={step}",
                 f"+callbacks.signal.signum={int(signum)}"]  # fmt: skip
    if val_batch is not None:
        signal_at.append(f"+callbacks.signal.val_batch={val_batch}")
    interrupted = _train(run_dir, *signal_at)
    assert interrupted.returncode == 128 + signum, interrupted.stderr[-3000:]
    saved = torch.load(run_dir / "checkpoints" / "on_exception.ckpt", weights_only=True)
    assert saved["global_step"] == (step if val_batch is not None else step + 1)  # the batch it was in finished
    assert not (run_dir / "metrics.json").exists()
    resumed = _train(run_dir, "ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]


def test_sigterm_mid_epoch_1_exits_143_and_resume_matches_an_uninterrupted_run(
    straight_run: Path, tmp_path: Path
) -> None:
    _interrupt_and_resume(tmp_path / "run", signal.SIGTERM, step=5)  # epoch 1, batch 1: no last.ckpt of epoch 1
    _assert_same_result(tmp_path / "run", straight_run)


@pytest.mark.slow  # 9 interrupted and 9 resumed runs: about 12 minutes on 2 loaded cores
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("where", ["epoch 0", "epoch 1", "validation"])
def test_sigterm_at_a_random_point_then_ckpt_path_last_matches_an_uninterrupted_run(
    straight_run: Path, tmp_path: Path, where: str, seed: int
) -> None:
    rng = random.Random(f"{where}-{seed}")
    if where == "validation":  # the validation after epoch 0 or 1, at its first batch (of 2)
        _interrupt_and_resume(tmp_path / "run", signal.SIGTERM, step=rng.choice([4, 8]), val_batch=0)
    else:  # 4 batches per epoch
        first = 0 if where == "epoch 0" else 4
        _interrupt_and_resume(tmp_path / "run", signal.SIGTERM, step=first + rng.randrange(3))
    _assert_same_result(tmp_path / "run", straight_run)


@pytest.mark.slow  # one interrupted and one resumed run
def test_ctrl_c_stops_at_the_batch_end_exits_130_and_resumes_exactly(straight_run: Path, tmp_path: Path) -> None:
    _interrupt_and_resume(tmp_path / "run", signal.SIGINT, step=9)
    _assert_same_result(tmp_path / "run", straight_run)


@pytest.mark.slow  # three 2-process runs: about 3 minutes
def test_sigterm_to_the_main_process_of_a_ddp_run_exits_143_and_resumes_exactly(tmp_path: Path) -> None:
    ddp = ["trainer=ddp_cpu", "data.num_train=256", "trainer.max_epochs=2", "logger=csv"]  # 4 steps per epoch
    straight = _train(tmp_path / "straight", *ddp)
    assert straight.returncode == 0, straight.stderr[-3000:]
    signal_at = ["+callbacks.signal._target_=helpers.signal_switch.SignalAt", "+callbacks.signal.step=5",
                 "+callbacks.signal.rank=0"]  # fmt: skip  # as a scheduler signals the launching process
    interrupted = _train(tmp_path / "run", *ddp, *signal_at)
    assert interrupted.returncode == 143, interrupted.stderr[-3000:]
    assert torch.load(tmp_path / "run" / "checkpoints" / "on_exception.ckpt", weights_only=True)["global_step"] == 6
    resumed = _train(tmp_path / "run", *ddp, "ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = _metrics(tmp_path / "straight"), _metrics(tmp_path / "run")
    for key in ("val/loss", "val/acc", "val/acc_best", "test/acc", "test/loss"):
        assert b[key] == pytest.approx(a[key], rel=1e-6, abs=1e-7), key
