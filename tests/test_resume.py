"""Kill and resume through the real entry point: a run killed with SIGKILL in the middle of an epoch and
restarted with ``ckpt_path=last`` ends with the same metrics as a run that was never interrupted, and its
TensorBoard logs keep the steps from before the crash."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_train import REPO, run_script

RUN = [
    "+experiment=parity_gru", "data.num_train=128", "data.num_val=64", "data.num_test=64",
    "model.net.num_layers=2", "model.net.dropout=0.3", "model.net.hidden_size=16", "trainer.max_epochs=4",
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
