"""Most-frequent-tag baseline on the split the CoNLL datamodule makes.

    python benchmarks/tagging_baseline.py                        # Turkish Web Treebank (UPOS), data seed 0
    python benchmarks/tagging_baseline.py --name turkish_wiki --seed 0

Each test token gets the tag it carries most often in the training part (ties: the tag first in sorted
order); a token never seen in training gets the most frequent training tag overall. Tokens are compared as
the datamodule's vocabulary sees them (``lowercase``). Prints test token accuracy and macro-F1 over tags.
"""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict

from sklearn.metrics import f1_score

from seqforge.data.conll import ConllDataModule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="turkish_web")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lowercase", action="store_true")
    args = parser.parse_args()
    dm = ConllDataModule(name=args.name, seed=args.seed, lowercase=args.lowercase)
    dm.setup()
    by_token: dict[str, Counter[str]] = defaultdict(Counter)
    overall: Counter[str] = Counter()
    for tokens, tags in dm.sentences["train"]:
        for token, tag in zip(dm.split_text(" ".join(tokens)), tags):
            by_token[token][tag] += 1
            overall[tag] += 1
    fallback = min(overall, key=lambda t: (-overall[t], t))
    truth, preds, unseen = [], [], 0
    for tokens, tags in dm.sentences["test"]:
        for token, tag in zip(dm.split_text(" ".join(tokens)), tags):
            counts = by_token.get(token)
            unseen += counts is None
            preds.append(fallback if counts is None else min(counts, key=lambda t: (-counts[t], t)))
            truth.append(tag)
    acc = sum(p == t for p, t in zip(preds, truth)) / len(truth)
    f1 = f1_score(truth, preds, average="macro", labels=sorted(set(truth)), zero_division=0)
    print(f"{args.name} seed {args.seed}: test/acc={acc:.4f} test/f1={f1:.4f} ({len(truth)} test tokens, "
          f"{unseen / len(truth):.1%} unseen in training; fallback tag {fallback})")


if __name__ == "__main__":
    main()
