"""Callbacks that keep training runs safe: nothing lost on interrupt, nothing corrupted by a NaN, and
the same result whether or not a run was resumed.

- :class:`FiniteLossGuard` stops at the first non-finite training loss, *before* its backward pass and
  optimizer step, so no checkpoint is ever written from weights it produced.
- :class:`ExceptionCheckpoint` writes ``on_exception.ckpt`` when a run is interrupted (Ctrl-C / SIGINT,
  SIGTERM from a scheduler, any crash), but only from finite weights and never for a non-finite loss.
  ``trainer.fit(ckpt_path="last")`` picks the newer of it and ``last.ckpt``.
- :class:`ReseedEveryBatch` reseeds every RNG from ``(seed, epoch, batch)`` before each training batch, so
  a resumed run draws the same dropout masks as an uninterrupted one (data order comes from
  :class:`seqforge.data.sampling.EpochShuffleSampler`, which depends on ``(seed, epoch)`` only).
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.seed import seed_everything
from lightning.fabric.utilities.types import _PATH

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

    Skipped for :class:`NonFiniteLossError` and whenever a parameter is not finite, so an interrupt never
    replaces a good checkpoint with a broken one. The file is written atomically (temporary file, then
    rename), so a second interrupt during the save cannot leave half a checkpoint behind.
    """

    def __init__(self, dirpath: _PATH, filename: str = "on_exception") -> None:
        self.dirpath = os.fspath(dirpath)
        self.filename = filename

    @property
    def ckpt_path(self) -> str:
        return os.path.join(self.dirpath, self.filename + ".ckpt")

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, NonFiniteLossError):
            return
        if not all(torch.isfinite(p).all() for p in pl_module.parameters()):
            log.warning("ExceptionCheckpoint: parameters are not finite; no checkpoint written")
            return
        os.makedirs(self.dirpath, exist_ok=True)
        tmp = self.ckpt_path + ".tmp"
        trainer.save_checkpoint(tmp, weights_only=False)  # resumable: optimizer and loop states too
        if trainer.is_global_zero:
            os.replace(tmp, self.ckpt_path)
            log.warning(
                f"Interrupted by {type(exception).__name__}; saved {self.ckpt_path} (resume with ckpt_path=last)"
            )


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
        seed_everything(derived, workers=True, verbose=False)
