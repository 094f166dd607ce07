"""1-nearest-neighbour baselines on the official UCR/UEA train/test split of a set shipped offline.

    python benchmarks/ucr_nn_baseline.py GunPoint ArrowHead          # 1-NN Euclidean and 1-NN DTW
    python benchmarks/ucr_nn_baseline.py ACSF1 --no-dtw              # Euclidean only (DTW is O(T^2) per pair)

Series are compared as the .ts files hold them (no normalization). Euclidean distance needs equal lengths
(skipped otherwise). DTW is unconstrained (full window) and, for several channels, dependent (the cost of
a step pair is the squared Euclidean distance over all channels: DTW_D of the UEA archive); series may
differ in length. Prints test accuracy of each.
"""

from __future__ import annotations

import argparse

import numpy as np

from seqforge.data.base import package_data_path
from seqforge.data.ucr import read_ts


def dtw(query: np.ndarray, series: list[np.ndarray]) -> np.ndarray:
    """Full-window DTW distance (sum of squared step distances) from ``query`` ``(T, C)`` to each series."""
    longest = max(len(s) for s in series)
    padded = np.stack([np.pad(s, ((0, longest - len(s)), (0, 0))) for s in series])  # (N, S, C)
    cost = ((query[None, :, None, :] - padded[:, None, :, :]) ** 2).sum(-1)  # (N, T, S)
    n, t, s = cost.shape
    acc = np.full((n, t + 1, s + 1), np.inf)
    acc[:, 0, 0] = 0.0
    for k in range(2, t + s + 1):  # anti-diagonals i + j = k of the (1-based) accumulated matrix
        i = np.arange(max(1, k - s), min(t, k - 1) + 1)
        j = k - i
        best = np.minimum(np.minimum(acc[:, i - 1, j - 1], acc[:, i - 1, j]), acc[:, i, j - 1])
        acc[:, i, j] = cost[:, i - 1, j - 1] + best
    return acc[np.arange(n), t, [len(x) for x in series]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+")
    parser.add_argument("--no-dtw", action="store_true")
    args = parser.parse_args()
    for name in args.names:
        folder = package_data_path("sktime", "datasets", "data", name)
        train_x, train_y = read_ts(folder / f"{name}_TRAIN.ts")
        test_x, test_y = read_ts(folder / f"{name}_TEST.ts")
        labels = np.array(train_y)
        line = f"{name}: train {len(train_x)}, test {len(test_x)}"
        if len({len(x) for x in train_x + test_x}) == 1:
            flat = np.stack([x.reshape(-1) for x in train_x])
            hits = [labels[((flat - q.reshape(-1)) ** 2).sum(1).argmin()] == y for q, y in zip(test_x, test_y)]
            line += f"; 1-NN Euclidean {np.mean(hits):.3f}"
        else:
            line += "; 1-NN Euclidean: lengths differ, skipped"
        if not args.no_dtw:
            hits = [labels[dtw(q.astype(np.float64), train_x).argmin()] == y for q, y in zip(test_x, test_y)]
            line += f"; 1-NN DTW (full window{', dependent' if train_x[0].shape[1] > 1 else ''}) {np.mean(hits):.3f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
