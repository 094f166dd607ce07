"""The language-model task steps its scheduler itself (manual optimization): as Lightning would, and without
Lightning's warning about the scheduler dict's ``monitor`` key."""

from __future__ import annotations

import functools
import logging
import warnings
from typing import Any

import hydra
import lightning as L
import pytest
import torch

from seqforge.data.synthetic import CharStreamDataModule
from seqforge.models import LanguageModel
from seqforge.tasks import LanguageModelTask
from seqforge.utils.config import compose_config

logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
LR = 1e-2


class LearningRates(L.Callback):
    """The learning rate each training batch starts with, and the monitored value after each validation."""

    def __init__(self, monitor: str = "val/loss") -> None:
        self.monitor = monitor
        self.lrs: list[float] = []
        self.values: list[float] = []

    def on_train_batch_start(self, trainer: L.Trainer, module: Any, batch: Any, batch_idx: int) -> None:
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    def on_validation_end(self, trainer: L.Trainer, module: Any) -> None:
        if not trainer.sanity_checking:
            self.values.append(float(trainer.callback_metrics[self.monitor]))


def fit(scheduler: Any, epochs: int, val_batches: int = 1) -> tuple[LearningRates, list[warnings.WarningMessage]]:
    """A real fit of a small LM with ``scheduler``, 3 batches an epoch; the LRs seen and the warnings raised."""
    torch.manual_seed(0)
    dm = CharStreamDataModule(num_chars=2000, block_size=8, batch_size=4)
    dm.setup()
    task = LanguageModelTask(LanguageModel(**dm.net_kwargs, embedding_dim=8, rnn={"hidden_size": 8}),
                             functools.partial(torch.optim.SGD, lr=LR), scheduler, num_samples=0)  # fmt: skip
    seen = LearningRates()
    trainer = L.Trainer(accelerator="cpu", max_epochs=epochs, limit_train_batches=3, limit_val_batches=val_batches,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, callbacks=[seen])  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(task, datamodule=dm)
    return seen, caught


def reference_lrs(make: Any, steps: int, values: list[float] | None = None) -> list[float]:
    """The learning rates of ``make(optimizer)`` stepped ``steps`` times in plain torch (on ``values``)."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=LR)
    scheduler = make(optimizer)
    lrs = [optimizer.param_groups[0]["lr"]]
    for i in range(steps):
        optimizer.step()
        scheduler.step(*([values[i]] if values is not None else []))
        lrs.append(optimizer.param_groups[0]["lr"])
    return lrs


def monitor_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if "monitor" in str(w.message) or "lr scheduler dict" in str(w.message)]


def test_lm_auto_step_scheduler_steps_every_batch_without_a_monitor_warning() -> None:
    cfg = compose_config("train", ["+experiment=lm_auto", "model.scheduler.scheduler.total_iters=5"])
    scheduler = hydra.utils.instantiate(cfg.model.scheduler)  # lm_auto's own: LinearLR, interval step
    assert scheduler["interval"] == "step"
    seen, caught = fit(scheduler, epochs=2)
    assert monitor_warnings(caught) == []
    expected = reference_lrs(scheduler["scheduler"], 5)
    assert len(expected) == 6 and seen.lrs == pytest.approx(expected)  # one step after each of 6 batches


def test_step_scheduler_frequency_is_honoured() -> None:
    step_lr = functools.partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5)
    seen, caught = fit({"scheduler": step_lr, "interval": "step", "frequency": 2}, epochs=2)
    assert monitor_warnings(caught) == []
    # stepped after batches 2 of each epoch (1-based batch of the epoch, as Lightning counts)
    assert seen.lrs == pytest.approx([LR, LR, LR / 2, LR / 2, LR / 2, LR / 4])


def test_plateau_scheduler_steps_each_epoch_on_its_monitor() -> None:
    # mode=max on a falling loss: no improvement, so every epoch without one halves the learning rate
    plateau = functools.partial(torch.optim.lr_scheduler.ReduceLROnPlateau, mode="max", factor=0.5, patience=0)
    seen, caught = fit({"scheduler": plateau, "monitor": "val/loss"}, epochs=4)
    assert monitor_warnings(caught) == []
    assert len(seen.values) == 4
    per_epoch = reference_lrs(plateau, 3, seen.values)  # the epoch ends before the last one's step
    assert seen.lrs == pytest.approx([lr for lr in per_epoch for _ in range(3)])
    assert seen.lrs[-1] < LR  # it did reduce


def test_plateau_scheduler_without_its_monitor_fails_or_warns() -> None:
    plateau = functools.partial(torch.optim.lr_scheduler.ReduceLROnPlateau, patience=0)
    with pytest.raises(ValueError, match=r"LanguageModelTask: the ReduceLROnPlateau scheduler monitors 'val/ppl', "
                                         r"which is not logged by the end of epoch 0"):
        fit(plateau, epochs=1, val_batches=0)
    seen, caught = fit({"scheduler": plateau, "strict": False}, epochs=2, val_batches=0)
    assert any("The learning rate is not updated (strict=False)" in m for m in monitor_warnings(caught))
    assert seen.lrs == [LR] * 6


def test_plateau_scheduler_per_step_is_refused() -> None:
    plateau = functools.partial(torch.optim.lr_scheduler.ReduceLROnPlateau)
    with pytest.raises(ValueError, match=r"ReduceLROnPlateau scheduler is stepped on its monitor 'val/ppl' at the "
                                         r"end of epochs; set its interval to 'epoch', got 'step'"):
        fit({"scheduler": plateau, "interval": "step"}, epochs=1)
