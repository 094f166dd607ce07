"""A callback that makes seqforge itself warn once fit starts (to check that quieting others keeps ours)."""

import lightning as L

import seqforge


class SeqforgeWarningAtFitStart(L.Callback):
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        seqforge.GRU(2, 4, num_layers=1, dropout=0.5)  # warns: dropout acts between layers
