"""One-to-many on real data: a UCR/UEA classification set turned around into class -> series generation."""

from __future__ import annotations

import torch

from seqforge.data.synthetic import collate_conditional
from seqforge.data.ucr import UCRDataModule


class UCRGenerationDataModule(UCRDataModule):
    """The samples of a UCR/UEA dataset as ``(class id, series)`` pairs for conditional generation.

    Same files, validation split and train-only per-channel normalization as :class:`UCRDataModule`
    (same arguments), so a classifier trained with ``UCRDataModule`` on the same ``name``,
    ``val_fraction`` and ``seed`` reads the generated series in the space it was trained in.

    Batches: ``(cond, y, y_lengths)`` with ``cond`` int64 ``(B,)`` class ids, ``y`` float32 ``(B, T, C)``
    zero-padded, ``y_lengths`` int64 ``(B,)``.
    ``net_kwargs = {"num_conditions": K, "output_size": C}``.
    """

    collate_fn = staticmethod(collate_conditional)

    def build(self) -> dict[str, list[tuple[torch.Tensor, torch.Tensor]]]:
        return {split: [(y, x) for x, y in samples] for split, samples in super().build().items()}

    def train_lengths(self) -> list[int]:
        """Lengths of the training-part series (after ``setup()``), e.g. to draw lengths of generated ones."""
        if not self.splits:
            raise RuntimeError(f"{type(self).__name__}: call setup() first")
        return [int(x.shape[0]) for _, x in self.splits["train"]]

    @property
    def net_kwargs(self) -> dict[str, int]:
        sizes = super().net_kwargs
        return {"num_conditions": sizes["num_classes"], "output_size": sizes["input_size"]}
