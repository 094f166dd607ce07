"""`+experiment=lm_auto data.path=FILE` reads the file (no `data.name=null` needed); a name and a path together
are refused naming both."""

from __future__ import annotations

from pathlib import Path

import pytest

from seqforge.data.lm_budget import DEFAULT_SOURCE
from seqforge.utils.config import ConfigError, compose_config, instantiate_node

THROUGHPUT = {64: {"params": 50_000.0, "train_chars_per_s": 20_000.0, "eval_chars_per_s": 80_000.0}}


def small_text(path: Path) -> str:
    text = "".join(f"line {i}: the cat sat on the mat, {'and ' * (i % 5)}then it slept.\n" for i in range(600))
    path.write_text(text, encoding="utf-8")
    return text


def data_module(overrides: list[str], tmp_path: Path):  # type: ignore[no-untyped-def]
    cfg = compose_config("train", ["+experiment=lm_auto", "trainer.max_time=00:00:10:00",
                                   "model.net.rnn.hidden_size=64", *overrides], output_dir=tmp_path / "run")
    cfg.data.throughput = THROUGHPUT  # nothing is timed
    return instantiate_node("data", cfg.data)


def test_data_path_alone_selects_the_file(tmp_path: Path) -> None:
    text = small_text(tmp_path / "mine.txt")
    dm = data_module([f"data.path={tmp_path / 'mine.txt'}"], tmp_path)
    dm.setup("fit")
    assert dm.name is None and dm.text_file() == tmp_path / "mine.txt"
    assert "".join(dm.parts().values()) == text  # the whole file, split in order
    assert set(dm.vocab.itos) >= set(dm.parts()["train"])
    assert len(dm.train_dataloader()) > 0


def test_no_path_reads_the_default_corpus_and_a_name_still_works(tmp_path: Path) -> None:
    assert data_module([], tmp_path).name == DEFAULT_SOURCE == "shakespeare"
    assert data_module(["data.name=convention_speeches"], tmp_path).name == "convention_speeches"


def test_a_name_and_a_path_together_are_refused_naming_both(tmp_path: Path) -> None:
    small_text(tmp_path / "mine.txt")
    with pytest.raises(ConfigError, match=r"(?s)config 'data'.*BudgetTextDataModule: path='.*mine\.txt' and "
                                          r"name='convention_speeches' are two corpora; give one of them"):
        data_module(["data.name=convention_speeches", f"data.path={tmp_path / 'mine.txt'}"], tmp_path)
