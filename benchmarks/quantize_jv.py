"""Int8 against float32 on the main job's JapaneseVowels classifier: test accuracy and CPU speed.

    python scripts/train.py +experiment=ucr_gru                       # the main job, once
    python benchmarks/quantize_jv.py --ckpt logs/ucr_gru/runs/<timestamp>/checkpoints/epoch_NNN.ckpt

Accuracy: the checkpoint's test set through Lightning's ``Trainer.test``, once with the float32 net and once
with ``seqforge.quantize(net)``. Speed: one CPU thread, batch 1 (one test series) and batch 64 (64 test series,
mixed lengths), the float net with the backend it trained with (``auto``: torch's native kernel on CPU), the
same net on the ``eager`` loop, and the int8 net, interleaved (A, B, C, A, B, C, ...), medians of ``--repeats``
calls; also the route not taken (per-step int8 matmuls in a Python loop, see ``QUANTIZE.md``). Prints a
Markdown table and writes ``benchmarks/results/quantize_jv.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

import seqforge
from seqforge.checkpoint import datamodule_for, read_checkpoint

HERE = Path(__file__).resolve().parent


def test_accuracy(task: L.LightningModule, datamodule: L.LightningDataModule) -> float:
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    (metrics,) = trainer.test(task, datamodule=datamodule, verbose=False)
    return float(metrics["test/acc"])


def test_series(datamodule: L.LightningDataModule) -> tuple[list[Tensor], Tensor]:
    """Every test series unpadded ``[(T_i, C)]`` and the labels, in the test set's order."""
    series, labels = [], []
    for x, lengths, y in datamodule.test_dataloader():
        series += [row[:n] for row, n in zip(x, lengths.tolist())]
        labels.append(y)
    return series, torch.cat(labels)


def batch_of(series: list[Tensor], start: int, size: int) -> tuple[Tensor, Tensor]:
    rows = [series[(start + k) % len(series)] for k in range(size)]
    return pad_sequence(rows, batch_first=True), torch.tensor([len(r) for r in rows])


def interleaved(calls: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds per call, the contenders taking turns (the machine's load hits all alike)."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(3):  # warm-up
        for call in calls.values():
            call()
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def stepwise_int8(net: torch.nn.Module) -> Callable[[Tensor, Tensor], Tensor]:
    """The route not taken: int8 matmuls (torch's dynamic ``Linear``) inside a Python loop over steps, for the
    classifier's bidirectional GRU stack on full-length rows (no lengths: a speed probe, not a model)."""
    from torch.ao.nn.quantized.dynamic import Linear as Int8Linear

    rnn = net.encoder.rnn

    def int8_linear(weight: Tensor, bias: Tensor) -> Int8Linear:
        linear = torch.nn.Linear(weight.shape[1], weight.shape[0])
        linear.weight.data, linear.bias.data = weight.detach().clone(), bias.detach().clone()
        linear.qconfig = torch.ao.quantization.default_dynamic_qconfig
        return Int8Linear.from_float(linear)

    maps = [(int8_linear(w_ih, b_ih), int8_linear(w_hh, b_hh))
            for w_ih, w_hh, b_ih, b_hh in (cell.weights()[:4] for cell in rnn.cells)]  # fmt: skip

    def run(x: Tensor, lengths: Tensor) -> Tensor:
        B, T, _ = x.shape
        layer_in = x
        for layer in range(rnn.num_layers):
            outs = []
            for direction in range(rnn.num_directions):
                ih, hh = maps[layer * rnn.num_directions + direction]
                seq = layer_in if direction == 0 else layer_in.flip(1)
                gates_x = ih(seq.reshape(B * T, -1)).view(B, T, -1)  # input projection once for all steps
                h, hs = x.new_zeros(B, rnn.hidden_size), []
                for t in range(T):
                    xr, xz, xn = gates_x[:, t].chunk(3, 1)
                    hr, hz, hn = hh(h).chunk(3, 1)
                    r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
                    h = (1 - z) * torch.tanh(xn + r * hn) + z * h
                    hs.append(h)
                out = torch.stack(hs, 1)
                outs.append(out if direction == 0 else out.flip(1))
            layer_in = torch.cat(outs, 2)
        return layer_in

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, help="the main job's checkpoint (best or last)")
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--out", default=str(HERE / "results" / "quantize_jv.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)

    task = seqforge.load_from_checkpoint(args.ckpt)
    datamodule = datamodule_for(read_checkpoint(args.ckpt))
    datamodule.setup("test")
    float_net = task.net.eval()
    int8_net = seqforge.quantize(float_net)
    eager_net = copy.deepcopy(float_net)
    eager_net.encoder.rnn.backend = "eager"

    acc_float = test_accuracy(task, datamodule)
    task.net = int8_net
    acc_int8 = test_accuracy(task, datamodule)
    task.net = float_net

    series, _ = test_series(datamodule)
    route_b = stepwise_int8(float_net)
    speed = {}
    with torch.inference_mode():
        for batch in (1, 64):
            x, lengths = batch_of(series, 0, batch)
            full = torch.full_like(lengths, x.shape[1])
            want = float_net(x, lengths)
            got = int8_net(x, lengths)
            medians = interleaved({
                "float32": lambda x=x, lengths=lengths: float_net(x, lengths),
                "float32 eager loop": lambda x=x, lengths=lengths: eager_net(x, lengths),
                "int8": lambda x=x, lengths=lengths: int8_net(x, lengths),
                "int8 per-step matmuls (not taken)": lambda x=x, full=full: route_b(x, full),
            }, args.repeats)  # fmt: skip
            speed[batch] = {"time": x.shape[1], "median_ms": {k: v * 1e3 for k, v in medians.items()},
                            "int8/float32": medians["int8"] / medians["float32"],
                            "max_abs_logit_diff": float((got - want).abs().max())}  # fmt: skip
    result = {
        "ckpt": args.ckpt, "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "engine": torch.backends.quantized.engine,
        "backend_float": float_net.encoder.rnn.backend_used, "quantized": int8_net.quantization.int8,
        "left_float": int8_net.quantization.left_float, "test_acc": {"float32": acc_float, "int8": acc_int8},
        "test_series": len(series), "repeats": args.repeats, "speed": speed,
    }  # fmt: skip
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"test/acc float32 {acc_float:.4f}  int8 {acc_int8:.4f}  change {acc_int8 - acc_float:+.4f} "
          f"({round((acc_int8 - acc_float) * len(series))} of {len(series)} series)")  # fmt: skip
    names = list(speed[1]["median_ms"])
    print("| batch | T | " + " | ".join(f"{n} (ms)" for n in names) + " | int8/float32 |")
    print("|---" * (len(names) + 3) + "|")
    for batch, row in speed.items():
        cells = " | ".join(f"{row['median_ms'][n]:.2f}" for n in names)
        print(f"| {batch} | {row['time']} | {cells} | {row['int8/float32']:.2f} |")


if __name__ == "__main__":
    main()
