"""Callbacks and plugins that keep training runs safe: nothing lost on interrupt, nothing corrupted by a NaN
or a full disk, and the same result whether or not a run was resumed.

- :class:`FiniteLossGuard` stops at the first non-finite training loss, *before* its backward pass and
  optimizer step, so no checkpoint is ever written from weights it produced.
- :class:`ExceptionCheckpoint` writes ``on_exception.ckpt`` when a run that trained is interrupted
  (Ctrl-C / SIGINT, SIGTERM from a scheduler, any crash), but only from finite weights and never for a
  non-finite loss. ``train()`` resolves ``ckpt_path=last`` to the newer of it and ``last.ckpt``.
- :func:`stop_at_batch_end` makes Ctrl-C stop the way SIGTERM does (at the end of the running batch),
  and :func:`interrupt_exit_code` gives the shell status of an interrupt (143 for SIGTERM, 130 for SIGINT).
- :class:`AtomicCheckpointIO` writes every checkpoint to a temporary file in the same folder, syncs it to
  disk and renames it into place: a failed write (full disk) leaves the previous files as they were. The
  best and the last checkpoint of one epoch end are one file under two names (a hard link) holding the
  newest callback states.
- :class:`ReseedEveryBatch` reseeds every RNG from ``(seed, epoch, batch)`` before each training batch, so
  a resumed run draws the same dropout masks as an uninterrupted one (data order comes from
  :class:`seqforge.data.sampling.EpochShuffleSampler`, which depends on ``(seed, epoch)`` only, and the
  position inside an epoch from :class:`seqforge.data.sampling.ResumableDataLoader`).
- :class:`RichProgressBar` is Lightning's, without a negative epoch total when epochs are unbounded.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import random
import signal
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch import callbacks
from lightning.pytorch.trainer.connectors.signal_connector import _HandlersCompose
from lightning.pytorch.utilities.combined_loader import CombinedLoader
from lightning.pytorch.utilities.exceptions import SIGTERMException

from seqforge.data.sampling import ResumableDataLoader

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the message names the epoch, step and batch."""


class FiniteLossGuard(L.Callback):
    """Raise :class:`NonFiniteLossError` as soon as a training loss is not finite.

    Runs in ``on_before_backward`` (automatic and manual optimization alike), i.e. before the gradients
    and the optimizer step that would spread the NaN into the weights.
    """

    def __init__(self) -> None:
        self._batch_idx = -1

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._batch_idx = batch_idx

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        value = float(loss.detach().float().cpu())
        if not math.isfinite(value):
            raise NonFiniteLossError(
                f"training loss is {value} at epoch {trainer.current_epoch}, global step {trainer.global_step}, "
                f"batch {self._batch_idx}; stopped before the optimizer step, checkpoints keep the last finite "
                "weights (lower the learning rate, clip gradients, or check the batch for NaN inputs)"
            )


class ExceptionCheckpoint(L.Callback):
    """Save ``<dirpath>/<filename>.ckpt`` when training stops on an exception or a signal.

    Written only during ``fit``, only once this fit has trained at least one step (a failure during setup
    or the sanity check leaves nothing to resume), never for :class:`NonFiniteLossError` and never from
    weights that are not finite, so an interrupt never replaces a good checkpoint with a broken or
    untrained one. ``train()`` makes every checkpoint write atomic (:class:`AtomicCheckpointIO`) and
    resolves ``ckpt_path=last`` to the newer of this file and ``last.ckpt``.

    The checkpoint resumes exactly: a training batch that was interrupted before it finished is replayed
    (the training loader's saved position is moved back to it), and a validation that was interrupted
    is run again from its first batch (its metrics so far were not saved).
    """

    def __init__(self, dirpath: _PATH, filename: str = "on_exception") -> None:
        self.dirpath = os.fspath(dirpath)
        self.filename = filename
        self._start_step: int | None = None

    @property
    def ckpt_path(self) -> str:
        return os.path.join(self.dirpath, self.filename + ".ckpt")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start_step = trainer.global_step  # after a resume: the restored step

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start_step = None  # training is over: a later failure (in test) leaves nothing to resume

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        start, self._start_step = self._start_step, None
        if isinstance(exception, NonFiniteLossError) or start is None or trainer.global_step <= start:
            return
        if not all(torch.isfinite(p).all() for p in pl_module.parameters()):
            log.warning("ExceptionCheckpoint: parameters are not finite; no checkpoint written")
            return
        _rewind_unfinished_work(trainer)
        trainer.save_checkpoint(self.ckpt_path, weights_only=False)  # resumable: optimizer and loop states too
        if trainer.is_global_zero:
            log.warning(
                f"Interrupted by {type(exception).__name__}; saved {self.ckpt_path} (resume with ckpt_path=last)"
            )


def _rewind_unfinished_work(trainer: L.Trainer) -> None:
    """Make the loop state describe only finished work, so a resume from it redoes the rest.

    - a training batch fetched but not processed: the training loader's position goes back to the
      processed count (Lightning replays that batch index);
    - a validation in progress: its progress goes back to "started, no batch done", which Lightning
      resumes as a mid-evaluation restart from the first validation batch.
    """
    epoch_loop = trainer.fit_loop.epoch_loop
    train_progress: Any = epoch_loop.batch_progress  # Lightning's _BatchProgress (trackers with all four counts)
    processed = train_progress.current.processed
    for loader in CombinedLoader(trainer.train_dataloader).flattened if trainer.train_dataloader else []:
        if isinstance(loader, ResumableDataLoader):
            loader.position = min(loader.position, processed)
    val_progress: Any = epoch_loop.val_loop.batch_progress
    if trainer.validating and not trainer.sanity_checking and val_progress.total.completed > 0:
        for tracker in (val_progress.total, val_progress.current):
            tracker.ready = tracker.started = 1
            tracker.processed = tracker.completed = 0
        val_progress.is_last_batch = False


class ReseedEveryBatch(L.Callback):
    """Seed python, numpy and torch from ``(seed, epoch, batch_idx)`` before every training batch.

    Per batch rather than per epoch because Lightning skips ``on_train_epoch_start`` for the epoch after a
    checkpoint written at an epoch's end, and so that a resume in the middle of an epoch also matches.
    """

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        derived = ((self.seed * 1_000_003 + trainer.current_epoch) * 1_000_003 + batch_idx) % 2**32
        # not seed_everything: that also rewrites PL_GLOBAL_SEED, the run seed Lightning's samplers read
        random.seed(derived)
        np.random.seed(derived)
        if pl_module.device.type == "cpu":  # the CPU generator alone: torch.manual_seed would also seed (lazily)
            torch.default_generator.manual_seed(derived)  # every CUDA/XPU device, ~0.5 ms a batch
        else:
            torch.manual_seed(derived)


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` into a temporary file beside the target, ``fsync``, then ``os.replace`` onto it.

    Readers see the old file or the new one, never half of one; a failed write (``ENOSPC``, a signal)
    removes its temporary file and re-raises, leaving no truncated ``epoch_XXX.ckpt`` and no 0-byte file.

    The best and the last checkpoint at the end of one epoch hold the same training state (epoch, step,
    loop state, unchanged weights) and end up as one file under two names (a hard link; where the file
    system has none, two files). The second save also carries the callbacks' states as they are after the
    first one (the ``last`` checkpoint callback's own paths ...): when they equal the file's, the new name is
    linked to it; else the new checkpoint is written and the earlier name re-linked to it, so both names
    hold the newest callback states and a resume from either continues exactly as an uninterrupted run.
    """

    _written: _Written | None = None  # the last full save

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"AtomicCheckpointIO: storage_options are not supported, got {storage_options!r}")
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fingerprint = _training_state(checkpoint)
        previous = self._written if self._written is not None and self._written.holds(fingerprint) else None
        callbacks = checkpoint.get("callbacks")
        if previous is not None and _equal(previous.callbacks, callbacks):
            _replace(target, lambda tmp: os.link(previous.path, tmp), fallback=lambda tmp: self._write(checkpoint, tmp))
        else:
            _replace(target, lambda tmp: self._write(checkpoint, tmp))
            if previous is not None and previous.path != target:  # same state, newer callback states: one file
                with contextlib.suppress(OSError):  # no hard links here: the earlier file stays as written
                    _replace(previous.path, lambda tmp: os.link(target, tmp))
        self._written = None if fingerprint is None else _Written(fingerprint, copy.deepcopy(callbacks), target)
        _sync_folder(target.parent)

    def write(self, checkpoint: dict[str, Any], handle: Any) -> None:
        """Serialize ``checkpoint`` into the open binary file ``handle`` (the storage step)."""
        torch.save(checkpoint, handle)

    def _write(self, checkpoint: dict[str, Any], tmp: Path) -> None:
        with open(tmp, "xb") as handle:  # permissions from the umask, as a plain open() would give
            self.write(checkpoint, handle)
            handle.flush()
            os.fsync(handle.fileno())


class _Written:
    """The last full checkpoint :class:`AtomicCheckpointIO` saved: its training state, callback states, file."""

    def __init__(self, fingerprint: tuple[Any, ...], callbacks: Any, path: Path) -> None:
        self.fingerprint, self.callbacks, self.path = fingerprint, callbacks, path
        self.mtime_ns = path.stat().st_mtime_ns

    def holds(self, fingerprint: tuple[Any, ...] | None) -> bool:
        """The file still holds the training state ``fingerprint`` names (nobody replaced or touched it)."""
        if fingerprint is None or fingerprint != self.fingerprint:
            return False
        try:
            return self.path.stat().st_mtime_ns == self.mtime_ns
        except OSError:
            return False


def _replace(target: Path, make: Callable[[Path], None], fallback: Callable[[Path], None] | None = None) -> None:
    """Make a temporary file beside ``target`` with ``make(tmp)`` (``fallback(tmp)`` if that raises
    ``OSError``), then rename it onto ``target``; on any failure the temporary file is removed."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")  # same file system
    try:
        try:
            make(tmp)
        except OSError:
            if fallback is None:
                raise
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            fallback(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _sync_folder(folder: Path) -> None:
    """Make the renames in ``folder`` durable (not possible on every system)."""
    with contextlib.suppress(OSError):
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _equal(a: Any, b: Any) -> bool:
    """Exact equality of nested checkpoint entries (dicts, lists, tensors by dtype, shape and values)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype
                and torch.equal(a, b))  # NaN != NaN: such a checkpoint is written, not linked
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[key], b[key]) for key in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def _training_state(checkpoint: dict[str, Any]) -> tuple[Any, ...] | None:
    """What identifies the training state a full checkpoint holds: epoch, step, loop state and the weights'
    storage and in-place version counters (any optimizer step changes them); ``None`` for a weights-only one."""
    weights = checkpoint.get("state_dict")
    if not isinstance(weights, dict) or "optimizer_states" not in checkpoint:
        return None
    tensors = tuple((t.data_ptr(), t._version) for t in weights.values() if isinstance(t, torch.Tensor))
    return checkpoint.get("epoch"), checkpoint.get("global_step"), repr(checkpoint.get("loops")), tensors


class StopRequest:
    """What :func:`stop_at_batch_end` saw: ``signum`` of the first Ctrl-C, or ``None``."""

    signum: int | None = None


@contextlib.contextmanager
def stop_at_batch_end() -> Iterator[StopRequest]:
    """Within the block, the first SIGINT (Ctrl-C) asks Lightning to stop as SIGTERM does; a second one
    raises ``KeyboardInterrupt`` at once.

    Lightning stops on SIGTERM at the next batch boundary (training or evaluation) by raising
    ``SIGTERMException``, after which :class:`ExceptionCheckpoint` saves a checkpoint that resumes exactly.
    A ``KeyboardInterrupt`` raised in the middle of an optimizer step could leave weights half updated;
    routed this way, Ctrl-C gets the same clean stop. Outside a running ``Trainer`` call (Lightning's SIGTERM
    handler not installed, whatever other handler is) SIGINT raises ``KeyboardInterrupt`` as usual; outside
    the main thread the block changes nothing (Python lets only the main thread set signal handlers).
    """
    request = StopRequest()

    def handle(signum: int, frame: FrameType | None) -> None:
        lightning_handler = signal.getsignal(signal.SIGTERM)  # installed by a running Trainer, else another one
        if request.signum is not None or not isinstance(lightning_handler, _HandlersCompose):
            raise KeyboardInterrupt
        request.signum = signum
        log.warning("Ctrl-C: stopping at the end of the current batch (press Ctrl-C again to stop now)")
        lightning_handler(signum, frame)  # type: ignore[arg-type]  # Lightning types the frame as never None

    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield request
        return
    previous = signal.signal(signal.SIGINT, handle)
    try:
        yield request
    finally:
        signal.signal(signal.SIGINT, previous)


def interrupt_exit_code(error: BaseException) -> int | None:
    """The shell's exit status for an interrupt, ``128 + signal``: 143 for SIGTERM (Lightning's
    ``SIGTERMException``), 130 for SIGINT (``KeyboardInterrupt``); ``None`` for any other exception."""
    if isinstance(error, SIGTERMException):
        return 128 + signal.SIGTERM
    if isinstance(error, KeyboardInterrupt):
        return 128 + signal.SIGINT
    return None


class RichProgressBar(callbacks.RichProgressBar):
    """Lightning's rich progress bar, whose training bar shows no epoch total when epochs are unbounded
    (``max_epochs=-1``: ``max_steps`` or ``max_time`` ends the fit): ``Epoch 20``, where Lightning 2.6 writes
    ``Epoch 20/-2`` (fixed upstream by Lightning pull request 21924; this class can go once that is released
    and required). Same arguments as Lightning's."""

    def _get_train_description(self, current_epoch: int) -> str:
        max_epochs = self.trainer.max_epochs
        total = f"/{max_epochs - 1}" if max_epochs is not None and max_epochs > 0 else ""
        description = f"Epoch {current_epoch}{total}"
        return f"{description:{len(self.validation_description)}}"  # as wide as "Validation": no flicker
