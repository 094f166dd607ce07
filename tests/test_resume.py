"""Kill, interrupt and resume through the real entry point: a run killed with SIGKILL, or stopped by SIGTERM
or Ctrl-C anywhere in training or validation, and restarted with ``ckpt_path=last`` ends with the same
metrics as a run that was never interrupted, and its TensorBoard logs hold every step once (the epoch means
of the train metrics of an interrupted epoch included). The interrupted process exits with 128 + the
signal. A language model (state carried from batch to batch) resumes exactly in the middle of an epoch."""

from __future__ import annotations

import csv
import functools
import json
import random
import signal
import subprocess
from pathlib import Path

import lightning as L
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_train import REPO, run_script

from seqforge.callbacks import ExceptionCheckpoint, ReseedEveryBatch
from seqforge.data.synthetic import CharStreamDataModule
from seqforge.models import LanguageModel
from seqforge.tasks import LanguageModelTask

SAME = ["trainer.deterministic=true", "trainer.log_every_n_steps=1", "callbacks.early_stopping=null",
        "extras.print_config=false", "callbacks.rich_progress_bar=null", "callbacks.model_summary=null",
        "logger=many_loggers"]  # fmt: skip  # TensorBoard and CSV
RUN = [
    "+experiment=parity_gru", "data.num_train=128", "data.num_val=64", "data.num_test=64",
    "model.net.rnn.num_layers=2", "model.net.rnn.dropout=0.3", "model.net.rnn.hidden_size=16", "trainer.max_epochs=4",
    *SAME,
]  # fmt: skip  # 4 batches per epoch, 16 steps in all
CSV_DELETED = "Previous log files in this directory will be deleted"  # Lightning's CSVLogger, on a used folder


def _train(run_dir: Path, *extra: str, base: list[str] = RUN) -> subprocess.CompletedProcess:
    args = [str(REPO / "scripts" / "train.py"), *base, f"hydra.run.dir={run_dir}", *extra]
    return run_script(args, run_dir.parent, timeout=300, extra_path=(str(REPO / "tests"),))


def _scalars(run_dir: Path, tag: str) -> dict[int, float]:
    values: dict[int, float] = {}
    for events in sorted((run_dir / "tensorboard").glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events))
        acc.Reload()
        if tag in acc.Tags()["scalars"]:
            values.update({e.step: e.value for e in acc.Scalars(tag)})
    return values


def _csv_rows(run_dir: Path) -> list[dict[str, float]]:
    with open(run_dir / "csv" / "metrics.csv", newline="") as file:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(file)]


def _assert_same_csv(resumed: Path, straight: Path) -> None:
    """The resumed run's metrics.csv holds the rows of the uninterrupted run, in order: the rows of the part
    before the interrupt kept, none logged twice."""
    a, b = _csv_rows(straight), _csv_rows(resumed)
    assert [sorted(row) for row in b] == [sorted(row) for row in a]
    for x, y in zip(a, b):
        assert y == pytest.approx(x, rel=1e-6, abs=1e-7)


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
    assert CSV_DELETED not in resumed.stderr + resumed.stdout
    _assert_same_csv(tmp_path / "crashed", tmp_path / "straight")  # rows logged after last.ckpt not doubled
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
    _assert_same_csv(resumed, straight)
    a, b = _metrics(straight), _metrics(resumed)
    for key in ("val/loss", "val/acc", "val/acc_best", "test/acc", "test/loss"):
        assert b[key] == pytest.approx(a[key], rel=1e-6, abs=1e-7), key
    # TensorBoard: every training step and every validation epoch logged once, as in the uninterrupted run
    for tag in ("train/loss_step", "val/loss", "val/acc", "train/loss", "train/acc"):
        steps = []
        for events in sorted((resumed / "tensorboard").glob("events.out.tfevents.*")):
            acc = EventAccumulator(str(events))
            acc.Reload()
            steps += [e.step for e in acc.Scalars(tag)] if tag in acc.Tags()["scalars"] else []
        assert sorted(steps) == sorted(_scalars(straight, tag)), tag
    # the epoch means of the train metrics cover the whole epoch, the part before the interrupt included
    for tag in ("train/loss", "train/acc"):
        expected = _scalars(straight, tag)
        assert _scalars(resumed, tag) == pytest.approx(expected, rel=1e-6, abs=1e-7), tag


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    result = _train(run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def _interrupt_and_resume(run_dir: Path, signum: int, step: int, val_batch: int | None = None,
                          base: list[str] = RUN) -> None:  # fmt: skip
    signal_at = ["+callbacks.signal._target_=helpers.signal_switch.SignalAt", f"+callbacks.signal.step={step}",
                 f"+callbacks.signal.signum={int(signum)}"]  # fmt: skip
    if val_batch is not None:
        signal_at.append(f"+callbacks.signal.val_batch={val_batch}")
    interrupted = _train(run_dir, *signal_at, base=base)
    assert interrupted.returncode == 128 + signum, interrupted.stderr[-3000:]
    saved = torch.load(run_dir / "checkpoints" / "on_exception.ckpt", weights_only=True)
    assert saved["global_step"] == (step if val_batch is not None else step + 1)  # the batch it was in finished
    assert not (run_dir / "metrics.json").exists()
    resumed = _train(run_dir, "ckpt_path=last", base=base)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert CSV_DELETED not in resumed.stderr + resumed.stdout


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


LM_RUN = ["+experiment=char_lm", "data.num_chars=3000", "data.batch_size=8", "model.net.rnn.hidden_size=16",
          "model.net.embedding_dim=8", "model.num_samples=0", "trainer.max_epochs=1", *SAME]  # fmt: skip  # 10 steps


@pytest.mark.slow  # three runs of scripts/train.py: about 2 minutes on 2 loaded cores
def test_sigterm_in_the_middle_of_a_language_model_epoch_then_resume_is_exact(tmp_path: Path) -> None:
    # the LM carries its recurrent state from batch to batch (truncated BPTT): the checkpoint must carry it too
    straight = _train(tmp_path / "straight", base=LM_RUN)
    assert straight.returncode == 0, straight.stderr[-3000:]
    _interrupt_and_resume(tmp_path / "run", signal.SIGTERM, step=4, base=LM_RUN)
    _assert_same_csv(tmp_path / "run", tmp_path / "straight")
    a, b = _metrics(tmp_path / "straight"), _metrics(tmp_path / "run")
    for key in ("train/loss", "train/ppl", "val/loss", "val/ppl", "test/loss", "test/ppl"):
        assert b[key] == a[key], key  # exact: same batches, same states, same arithmetic
    weights = [torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
               for run in (tmp_path / "straight", tmp_path / "run")]  # fmt: skip
    for name, value in weights[0].items():
        assert torch.equal(value, weights[1][name]), name


class _CrashBeforeBackward(L.Callback):
    """Raise when the loss of global step ``step`` is about to be backpropagated: after the forward pass
    (the LM's carried state and the train metrics already advanced), before the batch is processed."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError("node lost")


def _fit_language_model(root: Path, crash_step: int | None = None, ckpt_path: Path | None = None
                        ) -> tuple[LanguageModelTask, dict]:  # fmt: skip
    L.seed_everything(0)
    data = CharStreamDataModule(num_chars=3000, block_size=16, batch_size=8)
    data.setup("fit")
    net = LanguageModel(**data.net_kwargs, embedding_dim=8, rnn={"cell": "lstm", "hidden_size": 16})
    task = LanguageModelTask(net, functools.partial(torch.optim.AdamW, lr=3e-3), num_samples=0)
    callbacks = [ReseedEveryBatch(0), ExceptionCheckpoint(root)]
    if crash_step is not None:
        callbacks.append(_CrashBeforeBackward(crash_step))
    trainer = L.Trainer(default_root_dir=root, max_epochs=2, accelerator="cpu", logger=False, callbacks=callbacks,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        enable_checkpointing=False, deterministic=True)  # fmt: skip
    trainer.fit(task, datamodule=data, ckpt_path=ckpt_path, weights_only=True)
    return task, {k: float(v) for k, v in trainer.callback_metrics.items()}


def test_a_language_model_resumed_after_a_crash_inside_a_batch_replays_it_from_the_same_state(tmp_path: Path) -> None:
    straight, straight_metrics = _fit_language_model(tmp_path / "straight")  # 2 epochs of 19 batches
    with pytest.raises(RuntimeError, match="node lost"):
        _fit_language_model(tmp_path / "crashed", crash_step=27)  # epoch 1, batch 8: its forward pass done
    saved = torch.load(tmp_path / "crashed" / "on_exception.ckpt", weights_only=True)
    assert saved["global_step"] == 27 and saved["epoch_carry"]["batch"] == 8
    assert saved["epoch_carry"]["state"] is not None  # the state batch 8 started from, not the one after it
    resumed, resumed_metrics = _fit_language_model(tmp_path / "crashed", ckpt_path=tmp_path / "crashed" /
                                                   "on_exception.ckpt")  # fmt: skip
    for (name, a), b in zip(straight.named_parameters(), resumed.parameters()):
        assert torch.equal(a, b), name
    for key in ("train/loss", "train/ppl", "val/loss", "val/ppl"):  # train/*: the means of all of epoch 1
        assert resumed_metrics[key] == straight_metrics[key], key
    # a checkpoint without the running state (written under DDP, or by an older seqforge): said, not silent
    del saved["epoch_carry"]
    torch.save(saved, tmp_path / "without.ckpt")
    with pytest.warns(UserWarning, match="resumed at batch 8 of epoch 1 from a checkpoint without the running "
                                         "epoch state .* cover the batches from here on only"):  # fmt: skip
        _fit_language_model(tmp_path / "without", ckpt_path=tmp_path / "without.ckpt")


def test_an_epoch_carry_of_other_metrics_is_refused_naming_both_sides() -> None:
    task = LanguageModelTask(LanguageModel(vocab_size=5, embedding_dim=4, rnn={"cell": "gru", "hidden_size": 4}))
    carry = task.epoch_carry()
    assert sorted(carry["metrics"]) == ["train_loss", "train_metrics.ppl"] and carry["state"] is None
    task.train_loss.update(torch.tensor(2.0), 3)
    saved = task.epoch_carry()
    task.train_loss.reset()
    task.load_epoch_carry(saved)
    assert float(task.train_loss.compute()) == 2.0 and task.train_loss.update_count == 1
    with pytest.raises(ValueError, match=r"train metrics \['train_loss'\], this task has \['train_loss', "
                                         r"'train_metrics.ppl'\]"):  # fmt: skip
        task.load_epoch_carry({"metrics": {"train_loss": saved["metrics"]["train_loss"]}, "state": None})
    wrong = {**saved["metrics"], "train_loss": saved["metrics"]["train_metrics.ppl"]}
    states = (r"the checkpoint holds the states \['count', 'total_log_probs'\], "
              r"MeanMetric has \['mean_value', 'weight'\]")
    with pytest.raises(ValueError, match=f"metric 'train_loss': {states}"):
        task.load_epoch_carry({"metrics": wrong, "state": None})
