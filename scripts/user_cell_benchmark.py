"""A user-written LSTM cell through ``backend="script"`` against the built-in ``script`` LSTM, interleaved.

    python scripts/user_cell_benchmark.py --runs 15 --warmup 3 --out benchmarks/results/user_cell/interleaved.md

One training step (forward + backward of ``out.sum()``) at T=100, B=32, I=H=256, fp32, one thread, for the
built-in ``seqforge.LSTM(backend="script")`` and ``seqforge.Recurrent(UserLSTMCell, backend="script")``
(``UserLSTMCell`` of ``scripts/benchmark.py``), each without ``lengths`` and with ``lengths`` (all ``T``: the
built-in then runs its hand-written fused kernels instead of torch's one-kernel CPU LSTM). The timed calls of
the four cases alternate (A, B, C, D, A, B, ...), so load on a shared machine hits them alike; medians.
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import statistics
import time
from pathlib import Path

import torch

import seqforge

SCRIPTS = Path(__file__).resolve().parent


def user_cell() -> type[torch.nn.Module]:
    spec = importlib.util.spec_from_file_location("seqforge_benchmark", SCRIPTS / "benchmark.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.UserLSTMCell


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    T, B, H = 100, 32, 256
    builtin = seqforge.LSTM(H, H, backend="script")
    user = seqforge.Recurrent(user_cell(), H, H, backend="script")
    x = torch.randn(T, B, H)
    full = torch.full((B,), T)
    cases = {
        "built-in LSTM, no lengths": (builtin, None),
        "user cell, no lengths": (user, None),
        "built-in LSTM, lengths": (builtin, full),
        "user cell, lengths": (user, full),
    }

    def step(layer: torch.nn.Module, lengths: torch.Tensor | None) -> float:
        start = time.perf_counter()
        out, _ = layer(x.requires_grad_(), lengths=lengths)
        out.sum().backward()
        return 1000 * (time.perf_counter() - start)

    for layer, lengths in cases.values():
        for _ in range(args.warmup):
            step(layer, lengths)
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.runs):
        for name, (layer, lengths) in cases.items():
            times[name].append(step(layer, lengths))
    medians = {name: statistics.median(values) for name, values in times.items()}
    load = " ".join(f"{v:.1f}" for v in __import__("os").getloadavg())
    lines = [
        "| case | fwd+bwd median (ms) | vs the built-in script LSTM, same inputs |",
        "|---|---|---|",
    ]
    for name, ms in medians.items():
        reference = medians["built-in LSTM, " + name.split(", ")[1]]
        lines.append(f"| {name} | {ms:.1f} | {ms / reference:.2f}x |")
    head = (f"T={T} B={B} I=H={H}, fp32, 1 thread, {args.runs} interleaved runs after {args.warmup} warm-up; "
            f"torch {torch.__version__}, {platform.machine()}, load average {load} (shared machine)")  # fmt: skip
    text = head + "\n\n" + "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
