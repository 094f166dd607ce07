"""CoNLL reader on small files: sentences, a missing tag column named by file and line, unseen tags."""

from __future__ import annotations

from pathlib import Path

import pytest

from seqforge.data.conll import ConllDataModule, read_conll

TRAIN = "-DOCSTART- O\n\nJohn B-PER\nlives\tO\nin O\nParis NNP B-LOC\n\n\nBob B-PER\nruns O\n"


def write(tmp_path: Path, text: str, name: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_sentences_split_on_blank_lines_with_the_last_column_as_tag(tmp_path: Path) -> None:
    assert read_conll(write(tmp_path, TRAIN, "train.txt"), "T") == [
        (["John", "lives", "in", "Paris"], ["B-PER", "O", "O", "B-LOC"]),
        (["Bob", "runs"], ["B-PER", "O"]),
    ]


def test_a_line_without_a_tag_is_an_error_naming_file_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "John B-PER\nlives\nin O\n", "bad.txt")
    with pytest.raises(ValueError, match=r"bad.txt, line 2, column 2: no tag after the token 'lives'"):
        read_conll(path, "T")


def test_datamodule_builds_tag_ids_and_refuses_a_tag_seen_only_in_test(tmp_path: Path) -> None:
    train = write(tmp_path, TRAIN, "train.txt")
    dm = ConllDataModule(train, train, train, max_vocab=3, batch_size=2)
    dm.setup()
    assert dm.tags == ["B-LOC", "B-PER", "O"] and dm.net_kwargs == {"vocab_size": 7, "num_classes": 3}
    x, lengths, y = next(iter(dm.val_dataloader()))
    assert lengths.tolist() == [4, 2] and y[0].tolist() == [1, 2, 2, 0] and y[1, 2:].tolist() == [-100, -100]
    test = write(tmp_path, "Acme B-ORG\n", "test.txt")
    with pytest.raises(ValueError, match=r"test.txt, sentence 1: tag 'B-ORG' is not in the training file"):
        ConllDataModule(train, train, test).setup()
    with pytest.raises(ValueError, match="max_vocab must be a positive int, got 0"):
        ConllDataModule(train, train, test, max_vocab=0)
