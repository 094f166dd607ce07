"""A user-written LSTM cell through ``backend="script"`` against the built-in ``script`` LSTM, interleaved.

    python scripts/user_cell_benchmark.py --runs 21 --clock cpu --out benchmarks/results/user_cell/interleaved.md

One training step (forward + backward of ``out.sum()``) at T=100, B=32, I=H=256, fp32, one thread, for the
built-in ``seqforge.LSTM(backend="script")``, ``seqforge.Recurrent(UserLSTMCell, backend="script")`` (the
ten-line cell of ``scripts/benchmark.py``) and ``seqforge.Recurrent(SplitUserLSTMCell, backend="script")``
(the same cell with the contract's optional input split), each without ``lengths`` and with ``lengths`` (all
``T``: the built-in then runs its hand-written fused kernels instead of torch's one-kernel CPU LSTM). The
timed calls of all six cases alternate (A, B, C, ..., A, B, ...), so load on a shared machine hits them
alike; medians. ``--clock cpu`` times the process's CPU time (``time.process_time``) instead of wall time.
``--profile`` adds, per layer (no ``lengths``), where its time goes: each op's share of the profiler's self
time and its calls per time step (``torch.profiler`` over ``--profile`` calls).
"""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path
from typing import Any

import benchmark  # scripts/benchmark.py (the cells and the interleaved timing)
import torch

import seqforge


def op_shares(name: str, layer: torch.nn.Module, case: Any, step: Any, calls: int, steps: int, top: int = 12) -> str:
    """A markdown table of the ``top`` ops of ``step(case)`` by share of self time, with calls per time step."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            step(case)
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    rows = [f"| `{e.key[:60]}` | {100 * e.self_cpu_time_total / total:.1f} % | {e.count / calls / steps:.2f} |"
            for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:top]]  # fmt: skip
    return f"\n{name} ({type(layer).__name__}), no lengths:\n\n| op | self time | calls per step |\n|---|---|---|\n" + \
        "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--clock", default="wall", choices=["wall", "cpu"])
    parser.add_argument("--profile", type=int, default=0, metavar="CALLS")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    T, B, H = 100, 32, 256
    layers = {
        "built-in LSTM": seqforge.LSTM(H, H, backend="script"),
        "user cell": seqforge.Recurrent(benchmark.UserLSTMCell, H, H, backend="script"),
        "user cell + input split": seqforge.Recurrent(benchmark.SplitUserLSTMCell, H, H, backend="script"),
    }
    x = torch.randn(T, B, H)
    full = torch.full((B,), T)

    def step(case: tuple[torch.nn.Module, torch.Tensor | None]) -> None:
        layer, lengths = case
        out, _ = layer(x.requires_grad_(), lengths=lengths)
        out.sum().backward()

    cases: dict[str, benchmark.Case] = {}
    for with_lengths in (False, True):
        for name, layer in layers.items():
            lengths = full if with_lengths else None
            cases[f"{name}, {'lengths' if with_lengths else 'no lengths'}"] = (step, lambda c=(layer, lengths): c)
    load_before = os.getloadavg()[0]
    medians = benchmark.interleaved_medians(cases, args.runs, args.warmup, False, args.clock)
    lines = [
        "| case | fwd+bwd median (ms) | vs the built-in script LSTM, same inputs |",
        "|---|---|---|",
    ]
    for name, ms in medians.items():
        reference = medians["built-in LSTM, " + name.split(", ")[1]]
        lines.append(f"| {name} | {ms:.1f} | {ms / reference:.2f}x |")
    head = (f"T={T} B={B} I=H={H}, fp32, 1 thread, {args.runs} interleaved runs after {args.warmup} warm-up, "
            f"{args.clock} clock; torch {torch.__version__}, {platform.machine()}, load average "
            f"{load_before:.1f} before / {os.getloadavg()[0]:.1f} after (shared machine)")  # fmt: skip
    text = head + "\n\n" + "\n".join(lines) + "\n"
    if args.profile:
        text += "".join(op_shares(name, layer, (layer, None), step, args.profile, T) for name, layer in layers.items())
    print(text)
    if args.out is not None:
        args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
