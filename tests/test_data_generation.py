"""UCR series as one-to-many generation data, and the classify-back check of ``scripts/results.py``."""

from __future__ import annotations

import importlib.util
import socket
from pathlib import Path

import pytest
import torch

from seqforge.data import CMUDictDataModule, UCRDataModule
from seqforge.data.generation import UCRGenerationDataModule
from seqforge.train import train
from seqforge.utils.config import CONFIG_DIR, compose_config

QUIET = [
    "extras.print_config=false",
    "callbacks.rich_progress_bar=null",
    "callbacks.model_summary=null",
    "logger=csv",
    "trainer.accelerator=cpu",
]


def load_results_script():
    spec = importlib.util.spec_from_file_location("results", CONFIG_DIR.parent / "scripts" / "results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_generation_batches_are_the_ucr_samples_turned_around(no_network: None) -> None:
    dm = UCRGenerationDataModule("JapaneseVowels", batch_size=16, val_fraction=0.2, seed=0)
    dm.setup()
    ref = UCRDataModule("JapaneseVowels", batch_size=16, val_fraction=0.2, seed=0)
    ref.setup()
    assert dm.state_dict() == ref.state_dict()  # same classes and train-only normalization
    assert dm.net_kwargs == {"num_conditions": 9, "output_size": 12}
    cond, y, lengths = next(iter(dm.val_dataloader()))
    x, x_lengths, labels = next(iter(ref.val_dataloader()))
    assert cond.dtype == torch.int64 and cond.shape == (16,)
    assert torch.equal(cond, labels) and torch.equal(lengths, x_lengths) and torch.equal(y, x)
    assert y.shape == (16, int(lengths.max()), 12)
    for row, n in zip(y, lengths):
        assert row[n:].abs().sum() == 0 and row[n - 1].abs().sum() > 0
    assert len(dm.train_lengths()) == len(dm.splits["train"]) == 216
    assert min(dm.train_lengths()) >= 7 and max(dm.train_lengths()) <= 29


def test_train_lengths_need_setup() -> None:
    with pytest.raises(RuntimeError, match="setup"):
        UCRGenerationDataModule("GunPoint").train_lengths()


def test_classify_generated_runs_on_tiny_checkpoints(tmp_path: Path) -> None:
    """Both experiments train (one tiny epoch each); the check returns a share in [0, 1] and chance 1/9."""
    small = [
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "test=false",
        "model.net.rnn.hidden_size=8",
    ]
    gen = train(compose_config("train", ["+experiment=ucr_generator", *QUIET, *small], tmp_path / "gen"))
    cls = train(compose_config("train", ["+experiment=ucr_lstm", *QUIET, *small], tmp_path / "cls"))
    results = load_results_script()
    out = results.classify_generated(gen["best_ckpt_path"], cls["best_ckpt_path"], per_class=3, seed=1)
    assert out["samples"] == 27.0 and out["chance"] == pytest.approx(1 / 9)
    assert 0.0 <= out["min_per_condition"] <= out["accuracy"] <= 1.0
    again = results.classify_generated(gen["best_ckpt_path"], cls["best_ckpt_path"], per_class=3, seed=1)
    assert again == out  # seeded sampling


def test_classify_generated_refuses_mismatched_normalization(tmp_path: Path) -> None:
    small = [
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=1",
        "trainer.limit_val_batches=1",
        "test=false",
        "model.net.rnn.hidden_size=8",
    ]
    gen = train(compose_config("train", ["+experiment=ucr_generator", *QUIET, *small, "data.seed=1"], tmp_path / "g"))
    cls = train(compose_config("train", ["+experiment=ucr_lstm", *QUIET, *small, "data.seed=2"], tmp_path / "c"))
    with pytest.raises(ValueError, match="normalization"):
        load_results_script().classify_generated(gen["best_ckpt_path"], cls["best_ckpt_path"], per_class=1)


def test_g2p_word_error_rate_counts_distinct_words(tmp_path: Path) -> None:
    overrides = [
        "+experiment=g2p_cmudict",
        *QUIET,
        "data.max_words=300",
        f"data.data_dir={tmp_path / 'data'}",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "test=false",
        "model.net.rnn.hidden_size=8",
    ]
    metrics = train(compose_config("train", overrides, tmp_path / "run"))
    results = load_results_script()
    out = results.g2p_word_error_rate(metrics["best_ckpt_path"], split="test", batch_size=7)
    dm = CMUDictDataModule(tmp_path / "data", max_words=300)
    dm.setup()
    assert out["words"] == len({src for src, _ in dm.pairs["test"]}) == 15
    assert 0.0 <= out["wer"] <= 1.0
    assert results.g2p_word_error_rate(metrics["best_ckpt_path"], split="test", batch_size=64) == out
