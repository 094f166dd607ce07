"""Truncated BPTT keeps the saved activation memory per window independent of the sequence length."""

import importlib.util
from pathlib import Path

import torch

import seqforge
from seqforge.utils.memory import SavedTensorMeter

_spec = importlib.util.spec_from_file_location("tbptt_memory", Path(__file__).parents[1] / "scripts/tbptt_memory.py")
tbptt_memory = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tbptt_memory)


def test_saved_memory_per_window_does_not_grow_with_length():
    short = tbptt_memory.train_long_sequence(length=100, window=20, hidden=8, batch=2)
    long = tbptt_memory.train_long_sequence(length=1000, window=20, hidden=8, batch=2)
    assert short["saved_bytes_peak"] == long["saved_bytes_peak"] > 0
    assert long["last_loss"] < long["first_loss"]


def test_meter_sees_memory_grow_without_truncation():
    lstm = seqforge.LSTM(1, 8)
    sizes = []
    for steps in (10, 40):
        meter = SavedTensorMeter()
        with meter.track():
            lstm(torch.randn(steps, 2, 1))
        sizes.append(meter.bytes)
    assert sizes[1] > 3 * sizes[0]
