"""Convolutional front ends that run over time before a recurrent encoder (LSTM-FCN style)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqforge.layers.attention import length_mask


class ConvFrontEnd(nn.Module):
    """Optional averaging downsampler, then 1-D convolutions (each with batch norm and ReLU) over time.

    The shape of FCN (Wang et al. 2017) and of the convolutional branch of LSTM-FCN (Karim et al. 2017),
    here placed before the recurrent layers so that they read learned local features at a lower rate.

    ``stride`` > 1 downsamples each run of ``stride`` valid steps, so a 1,400-step series reaches the
    recurrent layers as ``ceil(1400 / stride)`` steps: by default (``full_rate=0``) the input itself is
    averaged (piecewise aggregate approximation; padding is not averaged in) before every convolution;
    with ``full_rate=k`` the first ``k`` convolutions run at the input's rate and their (non-negative)
    outputs are max-pooled over each run, so that features narrower than ``stride`` steps (spikes, the
    shape of one cycle) survive the downsampling. Every convolution keeps the length ("same" padding, an even kernel
    pads one more step on the right) and outputs past a sequence's length are set to zero. Batch-norm
    statistics are taken over all positions of the batch, padding included.

    Args:
        input_size: channels ``C`` of the input.
        channels: output channels of each convolution (one layer per entry).
        kernel_sizes: kernel width of each convolution (as many as ``channels``).
        stride: downsampling factor (1: none).
        full_rate: convolutions run before the downsampling (0: average the input first; see above).

    ``forward(x, lengths)``: ``x`` ``(B, T, C)``, ``lengths`` ``(B,)`` or ``None`` ->
    ``((B, ceil(T / stride), channels[-1]), lengths)`` with ``lengths`` ``ceil(lengths / stride)``.
    """

    def __init__(
        self,
        input_size: int,
        channels: Sequence[int] = (128, 256, 128),
        kernel_sizes: Sequence[int] = (8, 5, 3),
        stride: int = 1,
        full_rate: int = 0,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        for key, value in (("input_size", input_size), ("stride", stride)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: {key} must be a positive int, got {value!r}")
        channels, kernel_sizes = list(channels), list(kernel_sizes)
        if not channels or len(channels) != len(kernel_sizes):
            raise ValueError(f"{name}: channels and kernel_sizes must be non-empty lists of equal length, "
                             f"got {channels} and {kernel_sizes}")
        if isinstance(full_rate, bool) or not isinstance(full_rate, int) or not 0 <= full_rate <= len(channels):
            raise ValueError(f"{name}: full_rate must be an int in [0, {len(channels)}] (the number of "
                             f"convolutions), got {full_rate!r}")
        if min(channels + kernel_sizes) < 1:
            raise ValueError(f"{name}: channels and kernel_sizes must be positive, got {channels} and {kernel_sizes}")
        self.stride, self.full_rate = stride, full_rate
        self.kernel_sizes = kernel_sizes
        inputs = [input_size, *channels[:-1]]
        self.convs = nn.ModuleList(nn.Conv1d(a, b, k) for a, b, k in zip(inputs, channels, kernel_sizes, strict=True))
        self.norms = nn.ModuleList(nn.BatchNorm1d(c) for c in channels)
        self.output_size = channels[-1]

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """``(B, T, C)`` -> ``(B, ceil(T / stride), channels[-1])`` and the new lengths (see class doc)."""
        B, T, _ = x.shape
        mask = torch.ones(B, T, dtype=x.dtype, device=x.device)
        if lengths is not None:
            mask = length_mask(lengths.to(x.device), T).to(x.dtype)
        h = (x * mask.unsqueeze(-1)).transpose(1, 2)  # (B, C, T)
        for k, (conv, norm, width) in enumerate(zip(self.convs, self.norms, self.kernel_sizes, strict=True)):
            if k == self.full_rate and self.stride > 1:
                h, mask = self._downsample(h, mask)
            h = torch.relu(norm(conv(F.pad(h, ((width - 1) // 2, width // 2))))) * mask.unsqueeze(1)
        if self.full_rate == len(self.convs) and self.stride > 1:
            h, mask = self._downsample(h, mask)
        if lengths is not None and self.stride > 1:
            lengths = torch.div(lengths + self.stride - 1, self.stride, rounding_mode="floor")
        return h.transpose(1, 2), lengths

    def _downsample(self, h: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, C, T)`` features and ``(B, T)`` mask -> ``(B, C, ceil(T / stride))`` and its mask: the mean of
        each run's valid steps before any convolution, the max (padding is zero, features are >= 0) after."""
        steps = F.avg_pool1d(mask.unsqueeze(1), self.stride, ceil_mode=True)  # share of valid steps
        if self.full_rate == 0:
            h = F.avg_pool1d(h, self.stride, ceil_mode=True) / steps.clamp_min(1.0 / self.stride)
        else:
            h = F.max_pool1d(h, self.stride, ceil_mode=True)
        return h, (steps.squeeze(1) > 0).to(h.dtype)
