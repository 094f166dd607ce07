"""Bad data files fail with the file (and line) named and what was expected: a folder instead of a file,
latin-1 or binary bytes, a truncated ``.ts``; a UTF-8 byte-order mark is not data."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from test_train import QUIET, REPO, run_script

from seqforge.data import SeriesDataModule, TextDataModule
from seqforge.data.base import package_data_path
from seqforge.data.pairs import read_pairs
from seqforge.data.series import read_csv_column
from seqforge.data.ucr import read_ts
from seqforge.train import train
from seqforge.utils.config import ConfigError, compose_config

TEXT_LM = ["data=text", "model=lm", "trainer.gradient_clip_val=null", "debug=fdr", "data.block_size=8",
           "data.batch_size=2", *QUIET]
SENTENCE = "the quick brown fox jumps over the lazy dog. " * 30


def test_a_folder_as_data_path_is_named(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError, match=rf"TextDataModule: {tmp_path} is a directory; expected a UTF-8 text"):
        train(compose_config("train", [*TEXT_LM, f"data.path={tmp_path}"], tmp_path / "run"))
    with pytest.raises(IsADirectoryError, match=rf"read_csv_column: {tmp_path} is a directory"):
        SeriesDataModule(path=tmp_path, column="y").setup()


@pytest.mark.parametrize(("content", "match"), [
    (SENTENCE.replace("fox", "caf\u00e9").encode("latin-1"),
     r"line 1: byte 0xe9 is not UTF-8; expected a UTF-8 text file"),
    (b"\x80\x04\x95" + bytes(range(256)) * 4, r"line 1: byte 0x80 is not UTF-8"),  # a pickle's first bytes
    (SENTENCE.encode() + b"\n\x00\x00\x00\x01", r"line 2: a NUL byte; expected a UTF-8 text file, not binary"),
])
def test_non_utf8_files_name_the_file_and_the_encoding(content: bytes, match: str, tmp_path: Path) -> None:
    path = tmp_path / "corpus.txt"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=rf"config 'data'.*{path}, {match}"):
        train(compose_config("train", [*TEXT_LM, f"data.path={path}"], tmp_path / "run"))
    for reader in (lambda p: read_pairs(p), lambda p: read_csv_column(p, "y"), read_ts):
        with pytest.raises(ValueError, match=rf"{path}, {match}"):
            reader(path)


def test_the_train_script_names_a_latin1_file(tmp_path: Path) -> None:
    path = tmp_path / "corpus.txt"
    path.write_bytes(SENTENCE.replace("fox", "caf\u00e9").encode("latin-1"))
    result = run_script([str(REPO / "scripts" / "train.py"), *TEXT_LM, f"data.path={path}"], tmp_path)
    assert result.returncode == 1
    assert f"{path}, line 1: byte 0xe9 is not UTF-8" in result.stderr, result.stderr[-2000:]
    assert "UnicodeDecodeError" not in result.stderr


def test_a_byte_order_mark_is_not_a_token(tmp_path: Path) -> None:
    text = tmp_path / "bom.txt"
    text.write_text("\ufeff" + SENTENCE, encoding="utf-8")
    datamodule = TextDataModule(path=text, block_size=8, batch_size=2)
    datamodule.setup()
    assert datamodule.vocab is not None and "\ufeff" not in datamodule.vocab.tokens
    assert datamodule.vocab.tokens == sorted(set(SENTENCE))
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("\ufeffab\tba\ncd\tdc\n", encoding="utf-8")
    assert read_pairs(pairs)[0] == ("ab", "ba")
    csv_file = tmp_path / "series.csv"
    csv_file.write_text("\ufeffy\n1\n2\n", encoding="utf-8")
    assert read_csv_column(csv_file, "y").tolist() == [1.0, 2.0]


def test_a_truncated_ts_file_names_file_and_line(tmp_path: Path) -> None:
    """A JapaneseVowels training file cut in the middle of a row (a partial download or copy)."""
    source = package_data_path("sktime", "datasets", "data", "JapaneseVowels")
    shutil.copy(source / "JapaneseVowels_TEST.ts", tmp_path)
    lines = (source / "JapaneseVowels_TRAIN.ts").read_text().splitlines()
    first_row = next(i for i, line in enumerate(lines) if line.lower().startswith("@data")) + 1
    cut_at = first_row + 40
    (tmp_path / "JapaneseVowels_TRAIN.ts").write_text("\n".join(lines[:cut_at] + [lines[cut_at][:200]]))
    overrides = ["+experiment=ucr_lstm", "debug=fdr", *QUIET, f"data.path={tmp_path}"]
    cfg = compose_config("train", overrides, tmp_path / "run")
    with pytest.raises(ConfigError, match=rf"JapaneseVowels_TRAIN\.ts, line {cut_at + 1}: ragged row with \d+ "
                                          r"dimensions, earlier rows have 12; the line looks cut off"):
        train(cfg)
    (tmp_path / "cut.ts").write_text("\n".join(lines[:cut_at] + [lines[cut_at].rsplit(":", 1)[0] + ":"]))
    with pytest.raises(ValueError, match=rf"cut\.ts, line {cut_at + 1}: label '' is not among the declared labels "
                                         r".*looks cut off"):
        read_ts(tmp_path / "cut.ts")
