"""Synthetic datamodules: batch contracts, correct targets, determinism, fitted state."""

from __future__ import annotations

import pytest
import torch

from seqforge.data.synthetic import (
    AddingProblemDataModule,
    CharStreamDataModule,
    ConditionalPatternDataModule,
    EchoTaggingDataModule,
    ParityDataModule,
    ReverseDataModule,
    SequenceTransformDataModule,
    SineForecastDataModule,
    SortDataModule,
)

TINY = {"num_train": 40, "num_val": 8, "num_test": 8, "batch_size": 8}


def _first(dm, split: str = "train"):
    dm.setup()
    loader = {"train": dm.train_dataloader, "val": dm.val_dataloader, "test": dm.test_dataloader}[split]()
    return next(iter(loader))


def test_adding_problem_targets_are_the_marked_sum():
    dm = AddingProblemDataModule(seq_len=12, **TINY)
    x, lengths, y = _first(dm)
    assert x.shape == (8, 12, 2) and x.dtype == torch.float32 and lengths.tolist() == [12] * 8
    assert y.shape == (8,)
    assert torch.all(x[..., 1].sum(1) == 2)
    assert torch.all(x[:, :6, 1].sum(1) == 1)  # one marker in each half
    torch.testing.assert_close(y, (x[..., 0] * x[..., 1]).sum(1))
    assert dm.net_kwargs == {"input_size": 2, "output_size": 1}


def test_parity_labels_and_variable_lengths():
    dm = ParityDataModule(min_len=2, max_len=6, **TINY)
    x, lengths, y = _first(dm)
    assert x.dtype == torch.long and x.shape[1] == int(lengths.max())
    for b, n in enumerate(lengths.tolist()):
        bits = x[b, :n] - 4
        assert set(bits.tolist()) <= {0, 1} and torch.all(x[b, n:] == 0)
        assert int(y[b]) == int(bits.sum()) % 2
    assert dm.net_kwargs == {"vocab_size": 6, "num_classes": 2}


def test_echo_tags_repeat_the_previous_symbol_and_pad_with_ignore_index():
    dm = EchoTaggingDataModule(num_symbols=4, delay=2, min_len=3, max_len=7, **TINY)
    x, lengths, y = _first(dm)
    for b, n in enumerate(lengths.tolist()):
        assert y[b, :2].tolist() == [0, 0]
        assert torch.equal(y[b, 2:n], x[b, : n - 2] - 4 + 1)
        assert torch.all(y[b, n:] == -100)
    assert dm.net_kwargs == {"vocab_size": 8, "num_classes": 5}


@pytest.mark.parametrize("cls,transform", [(ReverseDataModule, lambda s: s.flip(0)),
                                           (SortDataModule, lambda s: s.sort().values)])  # fmt: skip
def test_seq2seq_targets(cls, transform):
    dm = cls(num_symbols=5, min_len=2, max_len=6, **TINY)
    src, src_lengths, tgt, tgt_lengths = _first(dm)
    assert torch.equal(tgt_lengths, src_lengths + 2)
    for b, n in enumerate(src_lengths.tolist()):
        assert tgt[b, 0] == 1 and tgt[b, n + 1] == 2
        assert torch.equal(tgt[b, 1 : n + 1], transform(src[b, :n]))
    assert dm.net_kwargs == {"src_vocab_size": 9, "tgt_vocab_size": 9, "pad_id": 0, "bos_id": 1, "eos_id": 2}
    assert dm.decode([1, 4, 6, 2, 0]) == "ac"


def test_conditional_patterns_are_class_specific():
    dm = ConditionalPatternDataModule(num_conditions=3, num_symbols=5, min_len=2, **TINY)
    cond, y, lengths = _first(dm)
    assert cond.shape == (8,) and y.dtype == torch.long
    for b in range(8):
        pattern = dm.pattern(int(cond[b]))
        assert torch.equal(y[b, : int(lengths[b])], pattern)
    assert len({tuple(dm.pattern(c).tolist()) for c in range(3)}) == 3
    real = ConditionalPatternDataModule(output="real", seq_len=10, noise=0.0, **TINY)
    cond, y, lengths = _first(real)
    assert y.shape == (8, 10, 1) and y.dtype == torch.float32
    assert real.net_kwargs == {"num_conditions": 3, "output_size": 1}


def test_char_stream_batches_continue_each_other():
    dm = CharStreamDataModule(num_chars=3000, block_size=10, batch_size=4)
    dm.setup()
    batches = list(dm.train_dataloader())
    (x0, y0), (x1, _) = batches[0], batches[1]
    assert x0.shape == (4, 10) and torch.equal(x0[:, 1:], y0[:, :-1])
    assert torch.equal(y0[:, -1], x1[:, 0])  # row b of batch 1 continues row b of batch 0
    text = "".join(dm.vocab.decode(x0[0].tolist()))
    assert "." in text or " " in text
    assert dm.net_kwargs["vocab_size"] == len(dm.vocab)
    again = CharStreamDataModule(num_chars=3000, block_size=10, batch_size=4)
    again.load_state_dict(dm.state_dict())
    assert again.vocab == dm.vocab


def test_sine_forecast_scaler_fitted_on_training_part_only():
    dm = SineForecastDataModule(window=8, horizon=3, length=200, batch_size=4)
    history, lengths, target = _first(dm)
    assert history.shape == (4, 8, 1) and target.shape == (4, 3) and lengths.tolist() == [8] * 4
    series = dm.series  # the generated series, kept by setup()
    assert dm.scaler.shift == pytest.approx(series[:140].mean())
    assert dm.mase_scale == pytest.approx(abs(series[1:140] - series[:139]).mean())
    first_val = dm.splits["val"][0]
    torch.testing.assert_close(dm.scaler.inverse_transform(first_val[1].double()),
                               torch.from_numpy(series[140:143]), rtol=1e-5, atol=1e-5)  # fmt: skip
    assert dm.net_kwargs == {"input_size": 1, "horizon": 3}


def test_same_seed_same_data_and_bad_arguments():
    a, b = ParityDataModule(seed=3, **TINY), ParityDataModule(seed=3, **TINY)
    a.setup()
    b.setup()
    assert all(torch.equal(p[0], q[0]) for p, q in zip(a.splits["train"], b.splits["train"]))
    with pytest.raises(ValueError, match="ParityDataModule: max_len must be >= min_len"):
        ParityDataModule(min_len=5, max_len=2)
    with pytest.raises(ValueError, match="transform must be one of"):
        SequenceTransformDataModule(transform="rotate")
    with pytest.raises(ValueError, match="num_train must be a positive int"):
        AddingProblemDataModule(num_train=0)
    with pytest.raises(ValueError, match="too short for window"):
        SineForecastDataModule(window=50, horizon=10, length=100)
