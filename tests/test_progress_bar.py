"""The progress bar of a run with unbounded epochs (max_epochs=-1, max_steps ends it) shows no epoch total."""

from __future__ import annotations

import functools
import io
import logging

import lightning as L
import torch
from hydra.utils import instantiate

from seqforge.callbacks import RichProgressBar
from seqforge.data.synthetic import CharStreamDataModule
from seqforge.models import LanguageModel
from seqforge.tasks import LanguageModelTask
from seqforge.utils.config import compose_config

logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)


def rendered_bar(max_epochs: int, max_steps: int) -> str:
    """The text the configured progress bar (configs/callbacks/rich_progress_bar.yaml) printed during a real
    fit of 2 batches an epoch."""
    cfg = compose_config("train", ["+experiment=char_lm"])
    bar = instantiate(cfg.callbacks.rich_progress_bar,
                      console_kwargs={"file": io.StringIO(), "force_terminal": True, "width": 150, "record": True})
    assert isinstance(bar, RichProgressBar)
    torch.manual_seed(0)
    dm = CharStreamDataModule(num_chars=2000, block_size=8, batch_size=4)
    dm.setup()
    task = LanguageModelTask(LanguageModel(**dm.net_kwargs, embedding_dim=8, rnn={"hidden_size": 8}),
                             functools.partial(torch.optim.SGD, lr=0.1), num_samples=0)  # fmt: skip
    trainer = L.Trainer(accelerator="cpu", max_epochs=max_epochs, max_steps=max_steps, limit_train_batches=2,
                        limit_val_batches=1, logger=False, enable_checkpointing=False, enable_model_summary=False,
                        num_sanity_val_steps=0, callbacks=[bar])  # fmt: skip
    trainer.fit(task, datamodule=dm)
    assert trainer.current_epoch == 3
    return bar._console.export_text()


def test_unbounded_epochs_show_no_epoch_total() -> None:
    text = rendered_bar(max_epochs=-1, max_steps=6)
    assert "Epoch 2 " in text
    assert "/-" not in text and "Epoch 2/" not in text


def test_bounded_epochs_show_the_last_epoch() -> None:
    assert "Epoch 2/2" in rendered_bar(max_epochs=3, max_steps=-1)
