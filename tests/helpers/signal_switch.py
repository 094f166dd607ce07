"""Fault injection through the real entry point. `SignalAt` sends a signal to its own process at the start of the
training batch that makes global step ``step``, or at the start of validation batch ``val_batch`` of the
validation that follows step ``step`` (how a scheduler's SIGTERM or a user's Ctrl-C arrives)."""

import os
import signal

import lightning as L


class SignalAt(L.Callback):
    def __init__(self, step: int, signum: int = signal.SIGTERM, val_batch: int | None = None,
                 rank: int | None = None) -> None:  # fmt: skip  # rank: only that DDP process gets the signal
        self.step, self.signum, self.val_batch, self.rank = step, signum, val_batch, rank
        self.sent = False

    def _send(self) -> None:
        if not self.sent and self.rank in (None, int(os.environ.get("LOCAL_RANK", 0))):
            self.sent = True
            os.kill(os.getpid(), self.signum)

    def on_train_batch_start(self, trainer: L.Trainer, *args: object) -> None:
        if self.val_batch is None and trainer.global_step == self.step:
            self._send()

    def on_validation_batch_start(self, trainer: L.Trainer, pl_module: object, batch: object, batch_idx: int,
                                  dataloader_idx: int = 0) -> None:  # fmt: skip
        if self.val_batch == batch_idx and trainer.global_step == self.step and not trainer.sanity_checking:
            self._send()


class SignalInTest(L.Callback):
    """Send ``signum`` at the start of test batch ``batch`` (Ctrl-C or SIGTERM after a finished fit)."""

    def __init__(self, signum: int = signal.SIGINT, batch: int = 0) -> None:
        self.signum, self.batch = signum, batch

    def on_test_batch_start(self, trainer: L.Trainer, pl_module: object, batch: object, batch_idx: int,
                            dataloader_idx: int = 0) -> None:  # fmt: skip
        if batch_idx == self.batch:
            os.kill(os.getpid(), self.signum)


class FailInTest(L.Callback):
    """Raise ``RuntimeError`` when the test stage starts (a crash after a finished fit)."""

    def on_test_start(self, trainer: L.Trainer, pl_module: object) -> None:
        raise RuntimeError("test data unreadable")
