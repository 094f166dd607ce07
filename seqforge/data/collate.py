"""Padding collate functions: lists of variable-length sequences to padded batches with lengths."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def pad_sequences(seqs: Sequence[Tensor], padding_value: float = 0.0) -> tuple[Tensor, Tensor]:
    """Pad a list of tensors of shape ``(T_i, *)`` to ``(B, max T_i, *)``.

    Returns:
        ``(padded, lengths)``: ``padded`` has shape ``(B, T, *)`` (batch first) and ``lengths`` is a
        CPU ``int64`` tensor of shape ``(B,)``.
    """
    if len(seqs) == 0:
        raise ValueError("pad_sequences: expected at least one sequence, got an empty list")
    lengths = torch.tensor([s.shape[0] for s in seqs], dtype=torch.long)
    if int(lengths.min()) < 1:
        raise ValueError(f"pad_sequences: every sequence needs at least one step, got lengths {lengths.tolist()}")
    padded = torch.nn.utils.rnn.pad_sequence(list(seqs), batch_first=True, padding_value=padding_value)
    return padded, lengths


def collate_padded(batch: Sequence[tuple[Tensor, Tensor]], padding_value: float = 0.0) -> tuple[Tensor, Tensor, Tensor]:
    """Collate ``(sequence, target)`` pairs into ``(x, lengths, y)``.

    ``x`` is ``(B, T, *)`` padded with ``padding_value``, ``lengths`` is ``(B,)`` int64, and ``y`` is the
    targets stacked along a new batch dimension (so per-sample scalar targets give ``(B,)``).
    """
    xs, ys = zip(*batch)
    x, lengths = pad_sequences(xs, padding_value)
    return x, lengths, torch.stack(list(ys))


def collate_tagged(
    batch: Sequence[tuple[Tensor, Tensor]], padding_value: float = 0.0, ignore_index: int = -100
) -> tuple[Tensor, Tensor, Tensor]:
    """Collate ``(sequence, per-step labels)`` pairs into ``(x, lengths, y)``.

    ``y`` is ``(B, T)`` with padded positions set to ``ignore_index`` so losses and metrics skip them.
    """
    xs, ys = zip(*batch)
    x, lengths = pad_sequences(xs, padding_value)
    y, _ = pad_sequences(ys, ignore_index)
    return x, lengths, y


def collate_pairs(batch: Sequence[tuple[Tensor, Tensor]], pad_id: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Collate ``(source ids, target ids)`` pairs into ``(src, src_lengths, tgt, tgt_lengths)``.

    Both id tensors are ``(B, L)`` int64 padded with ``pad_id``; lengths are ``(B,)`` int64.
    """
    srcs, tgts = zip(*batch)
    src, src_lengths = pad_sequences(srcs, pad_id)
    tgt, tgt_lengths = pad_sequences(tgts, pad_id)
    return src, src_lengths, tgt, tgt_lengths
