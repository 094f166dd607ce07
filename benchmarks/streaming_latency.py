"""Streaming latency: one step at batch 1 on the CPU, each streaming model's ``step`` beside torch.nn.LSTM.

    python benchmarks/streaming_latency.py            # writes benchmarks/results/streaming.json, prints the table

Every model is a 2-layer unidirectional LSTM with hidden size 128 (``--hidden``, ``--layers``), float features
of 12 channels or token ids of a 64-symbol vocabulary (embedding 64). Per model and per reference, one call
feeds one time step and returns the state for the next: the models' ``step(x_t, state)``, seqforge's
``LSTM.step``, and ``torch.nn.LSTM`` called on a ``(1, 1, I)`` input with ``(h, c)`` (torch's native kernel).
The same models after :func:`seqforge.quantize` (int8) are timed too.
All contenders take turns (A, B, C, ..., A, B, C, ...) in one process on one thread; each figure is the
median of ``--repeats`` rounds of ``--steps`` steps, per step.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

import seqforge
from seqforge.models import ConditionalGenerator, Forecaster, LanguageModel, SequenceClassifier, SequenceTagger

HERE = Path(__file__).resolve().parent
CHANNELS, VOCAB, EMBED = 12, 64, 64


def models(hidden: int, layers: int) -> dict[str, nn.Module]:
    common: dict[str, Any] = {"rnn": {"hidden_size": hidden, "num_layers": layers, "cell": "lstm"}}
    return {
        "SequenceClassifier (pooling=last)": SequenceClassifier(num_classes=9, input_size=CHANNELS, **common),
        "SequenceTagger (token ids)": SequenceTagger(num_classes=9, vocab_size=VOCAB, embedding_dim=EMBED,
                                                     rnn={**common["rnn"], "bidirectional": False}),  # fmt: skip
        "LanguageModel": LanguageModel(vocab_size=VOCAB, embedding_dim=EMBED, **common),
        "Forecaster (direct, horizon 12)": Forecaster(input_size=CHANNELS, horizon=12, **common),
        "ConditionalGenerator (tokens)": ConditionalGenerator(vocab_size=VOCAB, num_conditions=9,
                                                              embedding_dim=EMBED, **common),  # fmt: skip
    }


def stepper(net: nn.Module) -> Callable[[], Any]:
    """A closure that feeds the next step of a batch-1 stream and keeps the state."""
    encoder = getattr(net, "encoder", None)
    token = isinstance(net, LanguageModel) or getattr(net, "is_token", False) or getattr(encoder, "embedding", None)
    x_t = torch.full((1,), 5, dtype=torch.long) if token else torch.randn(1, CHANNELS)
    if isinstance(net, ConditionalGenerator):  # streams from the state of a condition
        box: dict[str, Any] = {"state": net.init_state(1, torch.tensor([3]))}
    else:
        box = {"state": net.init_state(1)}

    def step() -> Any:
        y, box["state"] = net.step(x_t, box["state"])
        return y

    return step


def references(hidden: int, layers: int) -> dict[str, Callable[[], Any]]:
    ours = seqforge.LSTM(CHANNELS, hidden, layers, batch_first=True).eval()
    theirs = nn.LSTM(CHANNELS, hidden, layers, batch_first=True).eval()
    theirs.load_state_dict(ours.state_dict())
    x_t, box = torch.randn(1, CHANNELS), {"ours": ours.init_state(1), "theirs": ours.init_state(1)}

    def torch_lstm() -> Any:
        out, box["theirs"] = theirs(x_t.unsqueeze(1), box["theirs"])
        return out

    def seqforge_lstm() -> Any:
        out, box["ours"] = ours.step(x_t, box["ours"])
        return out

    return {"torch.nn.LSTM (1 step, native kernel)": torch_lstm, "seqforge.LSTM.step": seqforge_lstm}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=50, help="steps per timed round")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", default=str(HERE / "results" / "streaming.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)

    calls = references(args.hidden, args.layers)
    for name, net in models(args.hidden, args.layers).items():
        net.eval()
        calls[name] = stepper(net)
        calls[f"{name}, int8"] = stepper(seqforge.quantize(net))
    times: dict[str, list[float]] = {name: [] for name in calls}
    with torch.inference_mode():
        for call in calls.values():  # warm-up
            for _ in range(args.steps):
                call()
        for _ in range(args.repeats):
            for name, call in calls.items():
                start = time.perf_counter()
                for _ in range(args.steps):
                    call()
                times[name].append((time.perf_counter() - start) / args.steps)
    medians = {name: statistics.median(t) * 1e6 for name, t in times.items()}
    reference = medians["torch.nn.LSTM (1 step, native kernel)"]
    result = {
        "machine": platform.machine(), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "hidden_size": args.hidden, "num_layers": args.layers, "steps": args.steps, "repeats": args.repeats,
        "median_us_per_step": medians,
    }  # fmt: skip
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print("| step at batch 1 | median µs / step | × torch.nn.LSTM |")
    print("|---|---|---|")
    for name, us in medians.items():
        print(f"| {name} | {us:.0f} | {us / reference:.2f} |")


if __name__ == "__main__":
    main()
