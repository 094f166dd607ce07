"""The safety callbacks with a real Lightning Trainer: a NaN loss stops before corrupting anything, an
interrupt (SIGINT, SIGTERM, crash) leaves a resumable checkpoint, reseeding makes epochs reproducible."""

import math
import os
import signal

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

import seqforge
from seqforge.callbacks import ExceptionCheckpoint, FiniteLossGuard, NonFiniteLossError, ReseedEveryBatch
from seqforge.data.sampling import EpochShuffleSampler


class TinyTask(L.LightningModule):
    """A GRU regressor; ``poison_step`` makes the loss NaN there, ``hook`` runs at a given step."""

    def __init__(self, poison_step: int = -1, hook_step: int = -1, hook=None) -> None:
        super().__init__()
        self.rnn = seqforge.GRU(2, 8, batch_first=True, dropout=0.0)
        self.head = torch.nn.Linear(8, 1)
        self.drop = torch.nn.Dropout(0.3)
        self.poison_step, self.hook_step, self.hook = poison_step, hook_step, hook

    def training_step(self, batch, batch_idx):
        x, y = batch
        if self.global_step == self.hook_step and self.hook is not None:
            self.hook()
        out, _ = self.rnn(x)
        loss = torch.nn.functional.mse_loss(self.head(self.drop(out[:, -1])).squeeze(-1), y)
        if self.global_step == self.poison_step:
            loss = loss * float("nan")
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _loader(seed=0, shuffle_sampler=False):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 5, 2, generator=g)
    ds = TensorDataset(x, x.sum(dim=(1, 2)))
    sampler = EpochShuffleSampler(ds, seed) if shuffle_sampler else None
    return DataLoader(ds, batch_size=8, sampler=sampler)


def _trainer(tmp_path, callbacks, max_epochs=2):
    return L.Trainer(
        default_root_dir=tmp_path, max_epochs=max_epochs, accelerator="cpu", logger=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=callbacks,
    )  # fmt: skip


def _finite(path):
    state = torch.load(path, weights_only=True)["state_dict"]
    return all(torch.isfinite(v).all() for v in state.values())


def test_nan_loss_stops_with_step_and_batch_and_keeps_last_good_checkpoint(tmp_path):
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, every_n_train_steps=1, save_top_k=0)
    trainer = _trainer(tmp_path, [FiniteLossGuard(), ckpt, ExceptionCheckpoint(tmp_path / "ckpt")])
    with pytest.raises(NonFiniteLossError, match=r"training loss is nan at epoch 1, global step 6, batch 2"):
        trainer.fit(TinyTask(poison_step=6), _loader())
    last = tmp_path / "ckpt" / "last.ckpt"
    assert _finite(last)
    assert torch.load(last, weights_only=True)["global_step"] == 6  # written after step 6, before the NaN
    assert not (tmp_path / "ckpt" / "on_exception.ckpt").exists()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_a_resumable_checkpoint(tmp_path, signum):
    previous = signal.getsignal(signal.SIGINT)
    trainer = _trainer(tmp_path, [ExceptionCheckpoint(tmp_path / "ckpt")], max_epochs=3)
    try:
        with pytest.raises(SystemExit):
            trainer.fit(TinyTask(hook_step=5, hook=lambda: os.kill(os.getpid(), signum)), _loader())
    finally:
        signal.signal(signal.SIGINT, previous)  # Lightning ignores SIGINT while shutting down
    saved = tmp_path / "ckpt" / "on_exception.ckpt"
    assert saved.exists() and _finite(saved)
    step = torch.load(saved, weights_only=True)["global_step"]
    assert 5 <= step <= 6
    resumed = _trainer(tmp_path, [], max_epochs=3)
    resumed.fit(TinyTask(), _loader(), ckpt_path=saved)
    assert resumed.global_step == 12 and resumed.current_epoch == 3


def test_crash_with_nan_weights_writes_no_checkpoint(tmp_path):
    def poison_and_crash():
        with torch.no_grad():
            task.head.weight.fill_(float("nan"))
        raise RuntimeError("boom")

    task = TinyTask(hook_step=2, hook=poison_and_crash)
    with pytest.raises(RuntimeError, match="boom"):
        _trainer(tmp_path, [ExceptionCheckpoint(tmp_path / "ckpt")]).fit(task, _loader())
    assert not (tmp_path / "ckpt" / "on_exception.ckpt").exists()


def test_reseeding_and_epoch_sampler_make_resumed_training_identical(tmp_path):
    def run(max_epochs, ckpt_path=None, root=tmp_path / "a"):
        L.seed_everything(0)
        task = TinyTask()
        ckpt = ModelCheckpoint(dirpath=root, save_last=True, save_top_k=0)
        trainer = _trainer(root, [ReseedEveryBatch(7), ckpt], max_epochs=max_epochs)
        trainer.fit(task, _loader(shuffle_sampler=True), ckpt_path=ckpt_path)
        return task

    straight = run(3, root=tmp_path / "straight")
    run(2, root=tmp_path / "split")
    resumed = run(3, ckpt_path=tmp_path / "split" / "last.ckpt", root=tmp_path / "split")
    for a, b in zip(straight.parameters(), resumed.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not math.isnan(float(next(straight.parameters()).detach().sum()))


def test_epoch_shuffle_sampler_depends_on_seed_and_epoch_only():
    data = list(range(20))
    sampler = EpochShuffleSampler(data, seed=3)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    sampler.set_epoch(0)
    assert list(sampler) == first and second != first and sorted(second) == data
