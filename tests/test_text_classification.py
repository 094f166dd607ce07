"""label<TAB>text reader (bad lines named by file, line, column), vocabulary limit, bucketed resumable batches."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch
from lightning.fabric.utilities.data import _set_sampler_epoch

from seqforge.data.sampling import BucketBatchSampler, ResumableDataLoader
from seqforge.data.text_classification import TextClassificationDataModule, read_labelled, stratified_split
from seqforge.predict import encode_tokens

GOOD = ["pos\ta fine film", "neg\ta dull film", "pos\tgreat fun\twith a tab", "neg\tboring", "pos\tlovely"] * 4


def write(tmp_path: Path, lines: list[str], name: str = "data.tsv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_reader_keeps_every_line_and_tabs_inside_the_text(tmp_path: Path) -> None:
    rows = read_labelled(write(tmp_path, GOOD), "T")
    assert len(rows) == len(GOOD)
    assert rows[2] == ("pos", "great fun\twith a tab")


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("pos a fine film", r"line 3: no tab"),
        ("\ta fine film", r"line 3, column 1: empty label"),
        ("pos\t  ", r"line 3, column 5: empty text"),
        ("", r"line 3: blank line"),
    ],
)
def test_bad_lines_are_errors_naming_file_line_and_column(tmp_path: Path, bad: str, message: str) -> None:
    path = write(tmp_path, [GOOD[0], GOOD[1], bad, GOOD[3]])
    with pytest.raises(ValueError, match=message) as err:
        read_labelled(path, "T")
    assert str(path) in str(err.value)


def test_a_label_seen_only_in_the_test_file_is_an_error_naming_it(tmp_path: Path) -> None:
    test = write(tmp_path, ["pos\tok", "neutral\tmeh"], "test.tsv")
    dm = TextClassificationDataModule(path=write(tmp_path, GOOD), test_path=test, batch_size=2)
    with pytest.raises(ValueError, match=r"test.tsv, line 2, column 1: label 'neutral' is not in the training"):
        dm.setup()


def test_vocabulary_limit_keeps_the_most_frequent_tokens_and_zero_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"max_vocab must be a positive int, got 0"):
        TextClassificationDataModule(path=write(tmp_path, GOOD), max_vocab=0)
    dm = TextClassificationDataModule(path=write(tmp_path, GOOD), max_vocab=2, val_fraction=0.2, test_fraction=0.2)
    dm.setup()
    counts = Counter(w for _, text in dm.texts["train"] for w in text.lower().split())
    expected = sorted(counts, key=lambda w: (-counts[w], w))[:2]
    assert dm.vocab is not None and dm.vocab.tokens == expected
    assert dm.net_kwargs == {"vocab_size": 6, "num_classes": 2}
    x, label = dm.splits["train"][0]
    assert label.item() in (0, 1) and x.dtype == torch.long and len(x) >= 1  # unknown words map to unk, kept


def test_char_tokens_keep_the_length_of_each_text(tmp_path: Path) -> None:
    dm = TextClassificationDataModule(path=write(tmp_path, GOOD), tokens="char", lowercase=False)
    dm.setup()
    for (x, _), (_, text) in zip(dm.splits["train"], dm.texts["train"]):
        assert len(x) == len(text)


def test_stratified_split_keeps_each_label_in_training_and_is_seeded() -> None:
    labels = ["a"] * 50 + ["b"] * 10 + ["c"]
    split = stratified_split(labels, 0.2, 0.2, seed=3)
    assert split == stratified_split(labels, 0.2, 0.2, seed=3) != stratified_split(labels, 0.2, 0.2, seed=4)
    assert split[-1] == 0  # the single 'c' stays in training
    assert sum(1 for y, s in zip(labels, split) if y == "b" and s == 2) == 2


def test_bucket_sampler_covers_every_sample_once_and_cuts_padding() -> None:
    lengths = torch.randint(1, 200, (1000,), generator=torch.Generator().manual_seed(0)).tolist()
    sampler = BucketBatchSampler(lengths, batch_size=16, seed=5, pool_batches=20)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    assert sorted(i for b in batches for i in b) == list(range(1000))
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    unbucketed = sum(len(b) * max(lengths[i] for i in b) for b in BucketBatchSampler(lengths, 16, 5, pool_batches=1))
    assert padded < 0.7 * unbucketed
    sampler.set_epoch(1)
    assert list(sampler) != batches
    sampler.set_epoch(0)
    assert list(sampler) == batches
    loader = torch.utils.data.DataLoader(list(range(1000)), batch_sampler=sampler)
    _set_sampler_epoch(loader, 1)  # what Lightning calls at the start of every epoch
    assert list(sampler) != batches
    with pytest.raises(ValueError, match="pool_batches must be a positive int"):
        BucketBatchSampler(lengths, 16, pool_batches=0)


def test_bucketed_loader_resumes_exactly_mid_epoch(tmp_path: Path) -> None:
    dm = TextClassificationDataModule(path=write(tmp_path, GOOD * 5), batch_size=3, pool_batches=2)
    dm.setup()

    def loader(epoch: int) -> ResumableDataLoader:
        torch.manual_seed(11)  # the run seed the sampler is drawn from
        made = dm.train_dataloader()
        assert isinstance(made, ResumableDataLoader) and isinstance(made.batch_sampler, BucketBatchSampler)
        made.batch_sampler.set_epoch(epoch)
        return made

    full = list(loader(2))
    interrupted = loader(2)
    it = iter(interrupted)
    for _ in range(4):
        next(it)
    state = interrupted.state_dict()
    assert state == {"position": 4}
    resumed = loader(2)
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert len(rest) == len(full) - 4
    for a, b in zip(rest, full[4:]):
        assert all(torch.equal(u, v) for u, v in zip(a, b))


def test_predict_encodes_new_text_as_the_training_texts_were_split(tmp_path: Path) -> None:
    dm = TextClassificationDataModule(path=write(tmp_path, GOOD), val_fraction=0.2, test_fraction=0.2)
    dm.setup()
    assert dm.vocab is not None and dm.split_text("A FINE, fine film!") == ["a", "fine", ",", "fine", "film", "!"]
    ids = encode_tokens(dm, "A FINE, fine film!")  # word tokens, lowercased: not characters
    assert ids.tolist() == dm.vocab.encode(["a", "fine", ",", "fine", "film", "!"])
    assert ids[1] != dm.vocab.unk_id and len(ids) == 6
