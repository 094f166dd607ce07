"""CoNLL reader on small files: sentences, a missing tag column named by file and line, unseen tags."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from seqforge import load_from_checkpoint
from seqforge.data.conll import ConllDataModule, read_conll
from seqforge.predict import predict
from seqforge.tasks.entity_metrics import entity_scores
from seqforge.train import train
from seqforge.utils.config import compose_config

QUIET = ["extras.print_config=false", "callbacks.rich_progress_bar=null", "callbacks.model_summary=null"]

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


def entity_corpus(path: Path, sentences: int, seed: int) -> list[list[str]]:
    """Sentences like ``Ann Lee visited Rome .`` tagged B-PER I-PER O B-LOC O; returns the tag sequences."""
    rng = random.Random(seed)
    first, last, places = ["Ann", "Bob", "Cy", "Dee"], ["Lee", "Moss"], ["Rome", "Oslo", "Lima"]
    lines, tags = [], []
    for _ in range(sentences):
        words = [(rng.choice(first), "B-PER")] + ([(rng.choice(last), "I-PER")] if rng.random() < 0.5 else [])
        words += [(rng.choice(["visited", "left", "saw"]), "O"), (rng.choice(places), "B-LOC"), (".", "O")]
        if rng.random() < 0.3:
            words = [("Then", "O"), *words]
        lines += [f"{w} {t}" for w, t in words] + [""]
        tags.append([t for _, t in words])
    path.write_text("\n".join(lines), encoding="utf-8")
    return tags


def test_tagging_run_logs_entity_scores_and_predict_decodes_viterbi_paths(tmp_path: Path) -> None:
    files = {split: tmp_path / f"{split}.txt" for split in ("train", "val", "test")}
    truth = {split: entity_corpus(path, 48 if split == "train" else 16, seed) for seed, (split, path)
             in enumerate(files.items())}  # fmt: skip
    overrides = ["data=conll", "model=tagger", "model.net.crf=true", "trainer.max_epochs=6", "data.batch_size=8",
                 *[f"data.{split}_path={path}" for split, path in files.items()], "trainer.accelerator=cpu",
                 "model.net.rnn.hidden_size=16", "model.net.embedding_dim=8", *QUIET]  # fmt: skip
    run = tmp_path / "run"
    metrics = train(compose_config("train", overrides, run))
    recorded = json.loads((run / "metrics.json").read_text())
    for stage in ("val", "test"):
        for score in ("precision", "recall", "f1"):
            assert 0.0 <= recorded[f"{stage}/entity_{score}"] <= 1.0
    assert recorded["test/entity_f1"] > 0.5  # learnable: names and places come from small fixed lists
    task = load_from_checkpoint(metrics["best_ckpt_path"])
    sentences = [line.split()[0] for line in files["test"].read_text().splitlines() if line]
    texts, k = [], 0
    for tags in truth["test"]:
        texts.append(" ".join(sentences[k : k + len(tags)]))
        k += len(tags)
    predicted = [p.split() for p in predict(task, texts, batch_size=5)]  # tag names, one per word
    assert all(len(p) == len(t) for p, t in zip(predicted, truth["test"]))
    assert entity_scores(truth["test"], predicted)["f1"] == pytest.approx(recorded["test/entity_f1"], abs=1e-6)
    # make Viterbi and the per-step argmax disagree: every step's argmax is I-PER, which the CRF may neither
    # start with nor repeat
    tags, net = task.datamodule.tags, task.net
    with torch.no_grad():
        net.head.bias[tags.index("I-PER")] += 50.0
        net.crf.start[tags.index("I-PER")] = -1e4
        net.crf.transitions[tags.index("I-PER"), tags.index("I-PER")] = -1e4
    viterbi = [p.split() for p in predict(task, texts[:6], batch_size=4)]
    assert all(p[0] != "I-PER" and ["I-PER", "I-PER"] not in [p[i : i + 2] for i in range(len(p))] for p in viterbi)
    ids = [torch.tensor(task.datamodule.vocab.encode(text.split())) for text in texts[:6]]
    x, lengths = torch.nn.utils.rnn.pad_sequence(ids, batch_first=True), torch.tensor([len(i) for i in ids])
    with torch.no_grad():
        emissions = net(x, lengths)
    assert (emissions.argmax(-1) == tags.index("I-PER")).all()
    best = net.crf.decode(emissions, lengths).tolist()
    assert viterbi == [[tags[i] for i in row[:n]] for row, n in zip(best, lengths.tolist())]


CONLLU = """# sent_id = 1
# text = Ali geldi.
1\tAli\tAli\tPROPN\tNNP\t_\t2\tnsubj\t_\t_
2-3\tgeldi.\t_\t_\t_\t_\t_\t_\t_\t_
2\tgeldi\tgel\tVERB\tVB\t_\t0\troot\t_\t_
3\t.\t.\tPUNCT\t.\t_\t2\tpunct\t_\t_
3.1\tx\t_\tX\t_\t_\t_\t_\t_\t_

1\tEv\tev\tNOUN\tNN\t_\t0\troot\t_\t_
"""


def test_conllu_reads_form_and_upos_or_xpos_skipping_comments_ranges_and_empty_nodes(tmp_path: Path) -> None:
    path = write(tmp_path, CONLLU, "a.conllu")
    assert read_conll(path, "T", "conllu") == [(["Ali", "geldi", "."], ["PROPN", "VERB", "PUNCT"]),
                                               (["Ev"], ["NOUN"])]
    assert read_conll(path, "T", "conllu", "xpos")[0][1] == ["NNP", "VB", "."]
    bad = write(tmp_path, "1\tAli\tAli\tPROPN\n", "bad.conllu")
    with pytest.raises(ValueError, match=r"bad.conllu, line 1: 4 TAB-separated columns, a CoNLL-U token line has 10"):
        read_conll(bad, "T", "conllu")
    missing = write(tmp_path, "1\tAli\tAli\t_\tNNP\t_\t0\troot\t_\t_\n", "missing.conllu")
    with pytest.raises(ValueError, match=r"missing.conllu, line 1, column 4: no UPOS tag for the token 'Ali'"):
        read_conll(missing, "T", "conllu")
    with pytest.raises(ValueError, match="format must be one of"):
        read_conll(path, "T", "conll-u")


def test_one_file_is_split_by_seed_into_disjoint_parts(tmp_path: Path) -> None:
    text = "".join(f"w{i} B-X\nv{i} O\n\n" for i in range(20))
    path = write(tmp_path, text, "all.txt")
    dm = ConllDataModule(path, val_fraction=0.2, test_fraction=0.1, seed=3)
    dm.setup()
    parts = {s: [tokens[0] for tokens, _ in rows] for s, rows in dm.sentences.items()}
    assert [len(parts[s]) for s in ("train", "val", "test")] == [14, 4, 2]
    assert sorted(sum(parts.values(), [])) == sorted(f"w{i}" for i in range(20))  # every sentence once
    again = ConllDataModule(path, val_fraction=0.2, test_fraction=0.1, seed=3)
    again.setup()
    assert again.sentences == dm.sentences  # seeded
    with pytest.raises(ValueError, match="pass both val_path and test_path, or neither"):
        ConllDataModule(path, val_path=path)
    with pytest.raises(ValueError, match="20 sentences .* give an empty train, val or test part"):
        ConllDataModule(path, val_fraction=0.01, test_fraction=0.01).setup()


def test_turkish_web_treebank_ships_offline_with_universal_tags() -> None:
    pytest.importorskip("turkish_treebanks", reason="pip install --no-deps turkish-treebanks")
    dm = ConllDataModule(name="turkish_web")
    dm.setup()
    sizes = {s: len(rows) for s, rows in dm.sentences.items()}
    assert sizes == {"train": 2033, "val": 254, "test": 254}  # 2,541 sentences, 10% / 10% held out
    assert sum(len(t) for rows in dm.sentences.values() for t, _ in rows) == 32422
    assert {"NOUN", "VERB", "PUNCT", "ADJ"} <= set(dm.tags or []) and len(dm.tags or []) == 14
