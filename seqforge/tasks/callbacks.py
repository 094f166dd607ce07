"""Training callbacks shared by the tasks."""

from __future__ import annotations

import lightning as L


class LengthCurriculum(L.Callback):
    """Sequence-length curriculum: train on short sequences first, then longer ones.

    In epoch ``e`` the datamodule's ``max_train_length`` is set to ``start_len`` grown linearly to
    ``end_len`` over ``grow_epochs`` epochs (then kept at ``end_len``). The datamodule must have a
    ``max_train_length`` attribute that its ``train_dataloader`` honours (the synthetic datamodules do), and
    the Trainer must rebuild the training loader every epoch: ``Trainer(reload_dataloaders_every_n_epochs=1)``.
    """

    def __init__(self, start_len: int, end_len: int, grow_epochs: int = 5) -> None:
        if not 1 <= start_len <= end_len:
            raise ValueError(f"LengthCurriculum: need 1 <= start_len <= end_len, got {start_len} and {end_len}")
        if grow_epochs < 1:
            raise ValueError(f"LengthCurriculum: grow_epochs must be >= 1, got {grow_epochs}")
        self.start_len, self.end_len, self.grow_epochs = start_len, end_len, grow_epochs

    def length_at(self, epoch: int) -> int:
        """Maximum training length in ``epoch`` (0-based)."""
        fraction = min(epoch / self.grow_epochs, 1.0)
        return round(self.start_len + fraction * (self.end_len - self.start_len))

    def _set(self, trainer: L.Trainer, epoch: int) -> None:
        datamodule = trainer.datamodule  # type: ignore[attr-defined]  # set at runtime by Lightning's data connector
        if datamodule is None or not hasattr(datamodule, "max_train_length"):
            raise ValueError(
                "LengthCurriculum: the datamodule must have a max_train_length attribute that its "
                f"train_dataloader honours, got {type(datamodule).__name__}"
            )
        datamodule.max_train_length = self.length_at(epoch)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        every_n = trainer.reload_dataloaders_every_n_epochs  # type: ignore[attr-defined]  # set by Lightning
        if every_n != 1:
            raise ValueError(
                "LengthCurriculum: set Trainer(reload_dataloaders_every_n_epochs=1) so each epoch's training "
                f"loader sees the new length, got {every_n}"
            )
        self._set(trainer, trainer.current_epoch)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._set(trainer, trainer.current_epoch + 1)  # the loader for the next epoch is built before its hooks
