"""The safety callbacks with a real Lightning Trainer: a NaN loss stops before corrupting anything, an
interrupt (SIGINT, SIGTERM, crash) leaves a resumable checkpoint (none from a run that never trained), a
full disk leaves the previous checkpoints as they were, reseeding makes epochs reproducible."""

import errno
import math
import os
import signal
import threading

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

import seqforge
from seqforge.callbacks import (
    AtomicCheckpointIO,
    ExceptionCheckpoint,
    FiniteLossGuard,
    NonFiniteLossError,
    ReseedEveryBatch,
    interrupt_exit_code,
    stop_at_batch_end,
)
from seqforge.data.sampling import EpochShuffleSampler, ResumableDataLoader, UnpaddedDistributedSampler


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

    def validation_step(self, batch, batch_idx):
        x, y = batch
        out, _ = self.rnn(x)
        self.log("val/loss", torch.nn.functional.mse_loss(self.head(out[:, -1]).squeeze(-1), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _loader(seed=0, shuffle_sampler=False, resumable=False):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 5, 2, generator=g)
    ds = TensorDataset(x, x.sum(dim=(1, 2)))
    sampler = EpochShuffleSampler(ds, seed) if shuffle_sampler else None
    return (ResumableDataLoader if resumable else DataLoader)(ds, batch_size=8, sampler=sampler)


def _trainer(tmp_path, callbacks, max_epochs=2, **kwargs):
    return L.Trainer(
        default_root_dir=tmp_path, max_epochs=max_epochs, accelerator="cpu", logger=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=callbacks, **kwargs,
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
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's own, whatever ran before
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


class _FailingSetup(L.Callback):
    def setup(self, trainer, pl_module, stage):
        raise RuntimeError("setup failed")


class _SignalInSanityCheck(L.Callback):
    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if trainer.sanity_checking:
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.parametrize("fault", ["setup", "sanity check"])
def test_no_interrupt_checkpoint_from_a_run_that_never_trained_a_step(tmp_path, fault):
    saver = ExceptionCheckpoint(tmp_path / "ckpt")
    if fault == "setup":
        with pytest.raises(RuntimeError, match="setup failed"):
            _trainer(tmp_path, [saver, _FailingSetup()]).fit(TinyTask(), _loader())
    else:
        trainer = _trainer(tmp_path, [saver, _SignalInSanityCheck()], num_sanity_val_steps=2)
        with pytest.raises(SystemExit) as raised:
            trainer.fit(TinyTask(), _loader(), _loader())
        assert interrupt_exit_code(raised.value) == 143
    assert not (tmp_path / "ckpt").exists()


def test_a_crash_inside_a_training_step_is_replayed_on_resume(tmp_path):
    def crash():
        raise RuntimeError("worker lost")

    def run(task, max_epochs, root, ckpt_path=None):
        L.seed_everything(0)
        callbacks = [ReseedEveryBatch(7), ExceptionCheckpoint(root / "ckpt")]
        _trainer(root, callbacks, max_epochs=max_epochs).fit(task, _loader(3, True, True), ckpt_path=ckpt_path)
        return task

    L.seed_everything(0)
    straight = run(TinyTask(), 3, tmp_path / "straight")
    L.seed_everything(0)
    with pytest.raises(RuntimeError, match="worker lost"):
        run(TinyTask(hook_step=6, hook=crash), 3, tmp_path / "crashed")  # epoch 1, batch 2: before its step
    saved = tmp_path / "crashed" / "ckpt" / "on_exception.ckpt"
    assert torch.load(saved, weights_only=True)["global_step"] == 6
    L.seed_everything(0)
    resumed = run(TinyTask(), 3, tmp_path / "crashed", ckpt_path=saved)
    for a, b in zip(straight.parameters(), resumed.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


class _FillingDisk:
    """A file that accepts ``free`` more bytes, then fails as a full disk does (OSError ENOSPC)."""

    def __init__(self, handle, free):
        self.handle, self.free = handle, free

    def write(self, data):
        data = bytes(data)
        if len(data) > self.free:
            self.handle.write(data[: self.free])  # the part that fitted really is on disk
            self.free = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.free -= len(data)
        return self.handle.write(data)

    def flush(self):
        self.handle.flush()


class SmallDiskIO(AtomicCheckpointIO):
    """Checkpoint storage on a disk with ``free`` bytes left (``None``: unlimited)."""

    def __init__(self):
        self.free = None

    def write(self, checkpoint, handle):
        super().write(checkpoint, handle if self.free is None else _FillingDisk(handle, self.free))


class _FillDiskAtEpoch1(L.Callback):
    def __init__(self, io):
        self.io = io

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            self.io.free = 3000  # less than one checkpoint


def test_a_full_disk_leaves_no_truncated_checkpoint_and_no_temporary_file(tmp_path):
    io = SmallDiskIO()
    keep_newest = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="epoch_{epoch:03d}", save_top_k=1,
                                  monitor="val/loss", auto_insert_metric_name=False)  # fmt: skip
    callbacks = [keep_newest, ExceptionCheckpoint(tmp_path / "ckpt"), _FillDiskAtEpoch1(io)]
    trainer = _trainer(tmp_path, callbacks, max_epochs=3, plugins=[io], num_sanity_val_steps=0)
    with pytest.raises((OSError, RuntimeError)) as raised:  # torch's zip writer may wrap the OSError
        trainer.fit(TinyTask(), _loader(), _loader())
    chain = [raised.value]
    while chain[-1].__context__ is not None:
        chain.append(chain[-1].__context__)
    assert any(isinstance(e, OSError) and e.errno == errno.ENOSPC for e in chain), chain
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["epoch_000.ckpt"]  # nothing else, no .tmp
    good = torch.load(tmp_path / "ckpt" / "epoch_000.ckpt", weights_only=True)
    assert good["global_step"] == 4 and _finite(tmp_path / "ckpt" / "epoch_000.ckpt")


def test_resumable_loader_continues_its_pass_where_the_saved_position_says():
    loader = ResumableDataLoader(list(range(10)), batch_size=3, sampler=EpochShuffleSampler(range(10), seed=1))
    full = [batch.tolist() for batch in loader]
    iterator = iter(loader)
    next(iterator), next(iterator)
    state = loader.state_dict()
    assert state == {"position": 2}
    restored = ResumableDataLoader(list(range(10)), batch_size=3, sampler=EpochShuffleSampler(range(10), seed=1))
    restored.load_state_dict(state)
    assert [batch.tolist() for batch in restored] == full[2:]
    assert [batch.tolist() for batch in restored] == full  # the next pass is a whole one again
    with pytest.raises(ValueError, match="position.*-1"):
        restored.load_state_dict({"position": -1})


def test_unpadded_distributed_sampler_gives_each_sample_to_one_process():
    parts = [list(UnpaddedDistributedSampler(range(370), num_replicas=3, rank=r)) for r in range(3)]
    assert sorted(i for part in parts for i in part) == list(range(370))
    assert [len(part) for part in parts] == [124, 123, 123]
    assert [len(UnpaddedDistributedSampler(range(370), num_replicas=3, rank=r)) for r in range(3)] == [124, 123, 123]


def test_stop_at_batch_end_leaves_sigint_alone_outside_the_main_thread():
    errors = []

    def enter():
        try:
            with stop_at_batch_end() as request:
                assert request.signum is None
        except Exception as err:  # a handler set off the main thread raises ValueError
            errors.append(err)

    before = signal.getsignal(signal.SIGINT)
    thread = threading.Thread(target=enter)
    thread.start()
    thread.join()
    assert errors == [] and signal.getsignal(signal.SIGINT) is before


def test_the_best_and_last_checkpoint_of_one_epoch_are_one_file_and_resume_exactly(tmp_path):
    def run(max_epochs, root, ckpt_path=None):
        L.seed_everything(0)
        task = TinyTask()
        best = ModelCheckpoint(dirpath=root, filename="best", monitor="val/loss", save_top_k=1)
        last = ModelCheckpoint(dirpath=root, filename="last", save_top_k=1, enable_version_counter=False)
        trainer = _trainer(root, [ReseedEveryBatch(7), best, last], max_epochs, plugins=[AtomicCheckpointIO()])
        trainer.fit(task, _loader(shuffle_sampler=True, resumable=True), _loader(), ckpt_path=ckpt_path)
        return task

    straight = run(3, tmp_path / "straight")
    run(1, tmp_path / "split")  # epoch 0 is the best so far: both names, one write
    best, last = tmp_path / "split" / "best.ckpt", tmp_path / "split" / "last.ckpt"
    assert best.stat().st_ino == last.stat().st_ino and last.stat().st_nlink == 2
    resumed = run(3, tmp_path / "split", ckpt_path=last)
    for a, b in zip(straight.parameters(), resumed.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    state = torch.load(last, weights_only=True)
    assert state["epoch"] == 2 and state["global_step"] == 12 and _finite(last)
    assert torch.load(best, weights_only=True)["global_step"] in (4, 8, 12)  # the best epoch's own state


def _states(states, root):
    """Callback states as comparable text, the run folder ``root`` written ``<root>``."""
    return repr(sorted(states.items())).replace(str(root), "<root>")


class _CallbackStates(L.Callback):
    """Record the checkpoint and early-stopping callbacks' states at the start of every training epoch."""

    def __init__(self, root):
        self.root, self.seen = root, {}

    def on_train_epoch_start(self, trainer, pl_module):
        states = {cb.state_key: cb.state_dict() for cb in trainer.callbacks
                  if isinstance(cb, ModelCheckpoint | EarlyStopping)}  # fmt: skip
        self.seen[trainer.current_epoch] = _states(states, self.root)


def test_a_linked_last_checkpoint_resumes_with_the_callback_states_of_an_uninterrupted_run(tmp_path):
    def run(max_epochs, root, ckpt_path=None):
        L.seed_everything(0)
        task, probe = TinyTask(), _CallbackStates(root)
        best = ModelCheckpoint(dirpath=root, filename="best", monitor="val/loss", save_top_k=1)
        last = ModelCheckpoint(dirpath=root, filename="last", save_top_k=1, enable_version_counter=False)
        stop = EarlyStopping(monitor="val/loss", patience=5)
        trainer = _trainer(root, [ReseedEveryBatch(7), best, last, stop, probe], max_epochs,
                           plugins=[AtomicCheckpointIO()])  # fmt: skip
        trainer.fit(task, _loader(shuffle_sampler=True, resumable=True), _loader(), ckpt_path=ckpt_path)
        return task, probe.seen

    straight, straight_seen = run(3, tmp_path / "straight")
    run(1, tmp_path / "split")
    best, last = tmp_path / "split" / "best.ckpt", tmp_path / "split" / "last.ckpt"
    assert best.stat().st_ino == last.stat().st_ino  # still one file under two names
    # what the file holds is what the callbacks of an uninterrupted run carry into epoch 1 (the last
    # callback's best_model_path was still '' when the best checkpoint was saved)
    saved = _states(torch.load(last, weights_only=True)["callbacks"], tmp_path / "split")
    assert "<root>/last.ckpt" in saved and saved == straight_seen[1]
    resumed, resumed_seen = run(3, tmp_path / "split", ckpt_path=last)
    assert resumed_seen[2] == straight_seen[2]
    for a, b in zip(straight.parameters(), resumed.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_checkpoint_of_another_training_state_is_written_not_linked(tmp_path):
    io = AtomicCheckpointIO()
    weights = {"w": torch.zeros(3)}
    state = {"epoch": 0, "global_step": 4, "loops": {}, "state_dict": weights, "optimizer_states": []}
    io.save_checkpoint(state, tmp_path / "a.ckpt")
    io.save_checkpoint(state, tmp_path / "b.ckpt")
    assert (tmp_path / "a.ckpt").stat().st_ino == (tmp_path / "b.ckpt").stat().st_ino
    weights["w"].add_(1.0)  # an optimizer step in place: same step counter, other weights
    io.save_checkpoint(state, tmp_path / "c.ckpt")
    assert (tmp_path / "c.ckpt").stat().st_ino != (tmp_path / "b.ckpt").stat().st_ino
    assert torch.load(tmp_path / "c.ckpt", weights_only=True)["state_dict"]["w"].tolist() == [1.0, 1.0, 1.0]
    io.save_checkpoint({**state, "global_step": 5}, tmp_path / "d.ckpt")
    (tmp_path / "d.ckpt").write_bytes(b"changed since")  # the file just written was replaced by someone else
    io.save_checkpoint({**state, "global_step": 5}, tmp_path / "e.ckpt")
    assert torch.load(tmp_path / "e.ckpt", weights_only=True)["global_step"] == 5
    assert not list(tmp_path.glob(".*.tmp"))


def test_reseeding_on_cpu_gives_the_cpu_generator_the_state_torch_manual_seed_gives():
    task = TinyTask()

    class Trainer:
        current_epoch = 2

    ReseedEveryBatch(7).on_train_batch_start(Trainer, task, None, 3)
    ours = torch.get_rng_state()
    derived = ((7 * 1_000_003 + 2) * 1_000_003 + 3) % 2**32
    torch.manual_seed(derived)
    assert torch.equal(ours, torch.get_rng_state())
