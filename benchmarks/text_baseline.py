"""Bag-of-words logistic regression on the split the text-classification datamodule makes (a baseline).

    python benchmarks/text_baseline.py                          # Rotten Tomatoes, data seed 0
    python benchmarks/text_baseline.py --path my.tsv --seed 0   # any label<TAB>text file

Features: unigram and bigram counts of the same lowercased word tokens the datamodule uses, TF-IDF weighted;
C chosen on the validation split from 0.1, 1, 10. Prints test accuracy and macro-F1.
"""

from __future__ import annotations

import argparse

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score

from seqforge.data.text_classification import TextClassificationDataModule, text_tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", default=None)
    parser.add_argument("--name", default="rotten_tomatoes")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    dm = TextClassificationDataModule(path=args.path, name=None if args.path else args.name, seed=args.seed)
    dm.setup()
    texts = {split: ([t for _, t in rows], [y for y, _ in rows]) for split, rows in dm.texts.items()}
    vectorizer = TfidfVectorizer(analyzer=lambda text: _ngrams(text_tokens(text, "word", True)))
    x_train = vectorizer.fit_transform(texts["train"][0])
    best = max(
        (LogisticRegression(C=c, max_iter=2000).fit(x_train, texts["train"][1]) for c in (0.1, 1.0, 10.0)),
        key=lambda m: accuracy_score(texts["val"][1], m.predict(vectorizer.transform(texts["val"][0]))),
    )
    preds = best.predict(vectorizer.transform(texts["test"][0]))
    truth = texts["test"][1]
    acc, f1 = accuracy_score(truth, preds), f1_score(truth, preds, average="macro")
    print(f"C={best.C} test/acc={acc:.4f} test/f1={f1:.4f} "
          f"(train {len(texts['train'][1])}, val {len(texts['val'][1])}, test {len(truth)})")


def _ngrams(tokens: list[str]) -> list[str]:
    return tokens + [f"{a} {b}" for a, b in zip(tokens, tokens[1:])]


if __name__ == "__main__":
    main()
