"""What ``train()`` costs beyond a bare PyTorch loop over the same datamodule, net and optimizer.

    python benchmarks/overhead.py                       # 12 epochs of +experiment=ucr_gru, 5 rounds
    python benchmarks/overhead.py --rounds 3 --epochs 6 --variants "no reseed:callbacks.reseed=null"

Contenders, run in one process, interleaved (bare, train, variants..., bare, train, ...) so that the load
of a shared machine hits them alike, one torch thread:

- ``bare``: the loop a user writes by hand. Seed, build the datamodule and the task from the same config
  (the task only to take its ``net`` and optimizer partial), then per epoch: train (forward, label-smoothed
  cross-entropy, backward, gradient-norm clipping at ``trainer.gradient_clip_val``, step), validate (loss
  and accuracy), ``torch.save`` the net and optimizer state (what a loop needs to resume); at the end one
  pass over the test set.
- ``train``: ``seqforge.train.train(cfg)`` with the experiment's defaults (best and last checkpoints,
  TensorBoard, early stopping, rich progress bar and model summary, the safety callbacks), printing off.
- each ``--variants`` entry ``"name:override override ..."``: ``train`` with those overrides, to find what
  a part costs.

Each timing covers everything after the config is composed: data, model, epochs, test. Prints a table and
writes ``--out`` (JSON) with every time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import cpu_threads  # noqa: E402  # scripts/cpu_threads.py, standard library only

cpu_threads.prepare_environment()  # before anything imports torch

import lightning as L  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from seqforge.train import train  # noqa: E402
from seqforge.utils.config import compose_config, instantiate_node  # noqa: E402

QUIET = ["extras.print_config=false"]


def bare_loop(cfg: Any, folder: Path) -> dict[str, float]:
    """The hand-written loop over ``cfg``'s datamodule, net and optimizer; returns the final metrics."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = instantiate_node("data", cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    task = instantiate_node("model", cfg.model, net=dict(datamodule.net_kwargs))
    net, smoothing, clip = task.net, task.label_smoothing, cfg.trainer.gradient_clip_val
    optimizer = task.optimizer_factory(params=net.parameters())
    folder.mkdir(parents=True, exist_ok=True)

    def evaluate(loader: Any) -> tuple[float, float]:
        net.eval()
        total, loss_sum, correct = 0, 0.0, 0
        with torch.no_grad():
            for x, lengths, y in loader:
                logits = net(x, lengths)
                loss_sum += float(F.cross_entropy(logits, y, label_smoothing=smoothing, reduction="sum"))
                correct += int((logits.argmax(-1) == y).sum())
                total += len(y)
        return loss_sum / total, correct / total

    for epoch in range(cfg.trainer.max_epochs):
        net.train()
        loader = datamodule.train_dataloader()
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)  # a new order every epoch, as Lightning does
        for x, lengths, y in loader:
            loss = F.cross_entropy(net(x, lengths), y, label_smoothing=smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
            optimizer.step()
        val_loss, val_acc = evaluate(datamodule.val_dataloader())
        torch.save({"net": net.state_dict(), "optimizer": optimizer.state_dict()}, folder / "last.pt")
    datamodule.setup("test")
    test_loss, test_acc = evaluate(datamodule.test_dataloader())
    return {"val/loss": val_loss, "val/acc": val_acc, "test/loss": test_loss, "test/acc": test_acc}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="ucr_gru")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--variants", nargs="*", default=[], help='"name:override override ..." (train() variants)')
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "overhead.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    base = [f"+experiment={args.experiment}", f"trainer.max_epochs={args.epochs}", *QUIET]
    contenders: dict[str, list[str] | None] = {"bare": None, "train": []}
    for variant in args.variants:
        name, _, overrides = variant.partition(":")
        contenders[name] = overrides.split()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as root:
        for round_ in range(args.rounds):
            for name, overrides in contenders.items():
                folder = Path(root) / f"{name.replace(' ', '_')}_{round_}"
                cfg = compose_config("train", base + (overrides or []), folder)
                start = time.perf_counter()
                metrics = bare_loop(cfg, folder) if overrides is None else train(cfg)
                times[name].append(time.perf_counter() - start)
                results[name] = {k: v for k, v in metrics.items() if k in ("test/acc", "val/loss", "stopped")}
                print(f"round {round_} {name}: {times[name][-1]:.2f} s", file=sys.stderr, flush=True)
    bare = statistics.median(times["bare"])
    print(f"\n{args.experiment}, {args.epochs} epochs, {args.rounds} rounds, 1 thread, median seconds (ratio to bare):")
    for name, values in times.items():
        ratios = [t / b for t, b in zip(values, times["bare"])]
        print(f"  {name:24s} {statistics.median(values):7.2f} s  {statistics.median(values) / bare:5.3f}x"
              f"  (per-round ratios {', '.join(f'{r:.3f}' for r in ratios)})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "experiment": args.experiment, "epochs": args.epochs, "rounds": args.rounds, "threads": 1,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "load_average": os.getloadavg(), "seconds": times, "metrics": results,
    }, indent=2))


if __name__ == "__main__":
    main()
