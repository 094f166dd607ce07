"""Helpers behind ``benchmarks/RESULTS.md``.

python scripts/results.py keep <run_dir> <row> <seed>
    copy ``<run_dir>/metrics.json`` to ``benchmarks/results/runs/<row>-seed<seed>.json`` (adds the run dir)
python scripts/results.py summary <row> [<metric> ...]
    mean, std, min and max over the kept seeds of a row for each metric (default: every test/ metric)
python scripts/results.py classify-generated --generator <ckpt> --classifier <ckpt> [--per-class N]
    sample N series per condition from a one-to-many generator (e.g. ``+experiment=ucr_generator``),
    classify them with a many-to-one classifier trained on the real data (``+experiment=ucr_lstm``) and
    print the share classified back to their condition (chance: 1 / number of conditions)
python scripts/results.py g2p-wer <ckpt> [--split test] [--beam-size K]
    word error rate of a G2P checkpoint over the headwords of a split: a word is correct when the decoded
    pronunciation equals any of its listed pronunciations (the g2p-seq2seq protocol)
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

import torch

from seqforge.checkpoint import load_from_checkpoint
from seqforge.data.collate import pad_sequences
from seqforge.data.vocab import tokenize

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "benchmarks" / "results" / "runs"


def keep(run_dir: Path, row: str, seed: int) -> Path:
    """Copy a run's ``metrics.json`` (plus its folder name) to ``RUNS/<row>-seed<seed>.json``."""
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    where = run_dir.resolve()
    metrics["run_dir"] = str(where.relative_to(ROOT) if where.is_relative_to(ROOT) else where)
    RUNS.mkdir(parents=True, exist_ok=True)
    target = RUNS / f"{row}-seed{seed}.json"
    target.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return target


def summary(row: str, metrics: list[str]) -> dict[str, dict[str, float]]:
    """``{metric: {"mean", "std", "min", "max", "n"}}`` over ``RUNS/<row>-seed*.json``."""
    paths = sorted(
        p for p in RUNS.glob(f"{row}-seed*.json") if re.fullmatch(rf"{re.escape(row)}-seed\d+\.json", p.name)
    )
    runs = [json.loads(p.read_text(encoding="utf-8")) for p in paths]
    if not runs:
        raise FileNotFoundError(f"summary: no kept runs {RUNS}/{row}-seed*.json")
    names = metrics or sorted(k for k in runs[0] if k.startswith("test/"))
    out = {}
    for name in names:
        values = [float(r[name]) for r in runs]
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        out[name] = {
            "mean": statistics.fmean(values),
            "std": std,
            "min": min(values),
            "max": max(values),
            "n": len(values),
        }
    return out


@torch.no_grad()
def classify_generated(
    generator_ckpt: str, classifier_ckpt: str, per_class: int = 100, seed: int = 0, strategy: str = "sample"
) -> dict[str, float]:
    """Share of generated series that the classifier assigns to the condition they were generated from.

    Each generated series gets a length drawn from the training lengths of *all* classes (so the length
    carries no class information); generation runs to the longest such length and is cut per series.

    Raises:
        ValueError: the two checkpoints were trained on differently normalized data or class sets.
    """
    generator = load_from_checkpoint(generator_ckpt)
    classifier = load_from_checkpoint(classifier_ckpt)
    gen_state, cls_state = generator.datamodule.state_dict(), classifier.datamodule.state_dict()
    if gen_state != cls_state:
        raise ValueError(
            "classify_generated: the generator and the classifier were fitted on different data "
            "(classes or normalization differ); train both with the same data.name/val_fraction/seed"
        )
    datamodule = generator.datamodule
    datamodule.setup()
    pool = torch.tensor(datamodule.train_lengths())
    k = generator.net.num_conditions
    rng = torch.Generator().manual_seed(seed)
    cond = torch.arange(k).repeat_interleave(per_class)  # (N,)
    lengths = pool[torch.randint(len(pool), (len(cond),), generator=rng)]  # (N,)
    series, _ = generator.net.generate(cond, max_len=int(lengths.max()), strategy=strategy, generator=rng)
    mask = torch.arange(series.shape[1])[None, :] < lengths[:, None]  # (N, T)
    series = series * mask[..., None]
    predicted = classifier.net(series, lengths).argmax(-1)
    per_condition = [(predicted[cond == c] == c).float().mean().item() for c in range(k)]
    return {
        "accuracy": (predicted == cond).float().mean().item(),
        "chance": 1.0 / k,
        "min_per_condition": min(per_condition),
        "samples": float(len(cond)),
    }


@torch.no_grad()
def g2p_word_error_rate(ckpt: str, split: str = "test", beam_size: int = 1, batch_size: int = 256) -> dict[str, float]:
    """Multi-reference word error rate of a seq2seq checkpoint over the distinct sources of ``split``.

    A source counts as correct when its decoded output equals any of its targets in the split
    (``datamodule.references``); this differs from the task's per-pair ``test/exact_match``, which
    compares each (word, pronunciation) pair with that one pronunciation only.
    """
    task = load_from_checkpoint(ckpt)
    datamodule = task.datamodule
    datamodule.setup()
    refs = datamodule.references(split)
    words = list(refs)
    src = [torch.tensor(datamodule.src_vocab.encode(tokenize(w, datamodule.tokenize))) for w in words]
    errors = 0
    for start in range(0, len(words), batch_size):
        ids, lengths = pad_sequences(src[start : start + batch_size], 0)
        decoded, _ = task.net.generate(ids.long(), lengths, beam_size=beam_size)  # (B, L)
        for word, row in zip(words[start : start + batch_size], decoded.tolist()):
            gold = [tokenize(r, datamodule.tgt_tokenize) for r in refs[word]]
            errors += datamodule.tgt_vocab.decode(row) not in gold
    return {"wer": errors / len(words), "words": float(len(words)), "beam_size": float(beam_size)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("keep")
    p.add_argument("run_dir", type=Path)
    p.add_argument("row")
    p.add_argument("seed", type=int)
    p = commands.add_parser("summary")
    p.add_argument("row")
    p.add_argument("metrics", nargs="*")
    p = commands.add_parser("classify-generated")
    p.add_argument("--generator", required=True)
    p.add_argument("--classifier", required=True)
    p.add_argument("--per-class", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--strategy", choices=("sample", "greedy"), default="sample")
    p = commands.add_parser("g2p-wer")
    p.add_argument("ckpt")
    p.add_argument("--split", default="test")
    p.add_argument("--beam-size", type=int, default=1)
    args = parser.parse_args(argv)
    if args.command == "keep":
        print(keep(args.run_dir, args.row, args.seed))
    elif args.command == "summary":
        print(json.dumps(summary(args.row, args.metrics), indent=2))
    elif args.command == "g2p-wer":
        print(json.dumps(g2p_word_error_rate(args.ckpt, args.split, args.beam_size), indent=2))
    else:
        result = classify_generated(args.generator, args.classifier, args.per_class, args.seed, args.strategy)
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
