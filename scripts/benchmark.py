"""Time every recurrent backend (forward, backward, both) and record parity and fusion on this device.

    python scripts/benchmark.py                      # CUDA if present (issue sizes), else CPU (small sizes)
    python scripts/benchmark.py --device cpu --runs 20
    python scripts/benchmark.py --device cuda --cells lstm --backends cudnn script
    python scripts/benchmark.py --device cpu --cells lstm user_lstm --backends script --sizes 100,32,256

``user_lstm`` is an LSTM cell written as a user writes one (:class:`UserLSTMCell`, the cell contract of
:mod:`seqforge.cells.base`) run through :class:`seqforge.Recurrent`; with ``script`` it is scripted inside the
generic scripted loop (TorchScript's autograd), while ``lstm`` runs the hand-written fused kernels.
``user_lstm_split`` is the same cell with the contract's optional input split (:class:`SplitUserLSTMCell`).

Writes ``benchmarks/results/<device>.json`` and ``benchmarks/results/<device>.md``. Timing: warm-up calls,
then the median of ``--runs`` timed calls (CUDA events on CUDA, ``time.perf_counter`` on CPU), the calls of
all backends of one configuration interleaved so that load changes on a shared machine hit them alike; CPU
runs use one thread by default (``--threads``). On CUDA every
size runs in fp32 with TF32 off and under bf16 autocast. "forward" is inference (``no_grad``), "backward" the
backward pass alone after an untimed forward, "both" forward + backward of a training step.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import cpu_threads  # scripts/cpu_threads.py, standard library only

cpu_threads.prepare_environment()  # before anything imports torch: libgomp reads its settings once

import torch  # noqa: E402

import seqforge  # noqa: E402
from seqforge.fused import get_backend  # noqa: E402
from seqforge.fused.fusion import loop_fusion_report  # noqa: E402
from seqforge.fused.parity import PARITY_TOL, backend_parity  # noqa: E402


class UserLSTMCell(torch.nn.Module):
    """An LSTM cell in ten lines, as a user would bring one: torch's gate order and math, its own parameters."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.ih = torch.nn.Linear(input_size, 4 * hidden_size)
        self.hh = torch.nn.Linear(hidden_size, 4 * hidden_size)

    def init_state(self, batch_size: int, device: Any = None, dtype: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        zeros = torch.zeros(batch_size, self.hidden_size, device=device, dtype=dtype)
        return zeros, zeros

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:  # fmt: skip
        i, f, g, o = (self.ih(x) + self.hh(state[0])).chunk(4, 1)
        c = torch.sigmoid(f) * state[1] + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, (h, c)


class SplitUserLSTMCell(UserLSTMCell):
    """:class:`UserLSTMCell` plus the cell contract's optional input split (four lines more): ``x W_ih^T + b``
    for all steps in one matmul, then the recurrent rest per step."""

    def project_input(self, x: torch.Tensor) -> torch.Tensor:
        return self.ih(x)  # (T, B, 4H)

    def step_projected(self, p: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
                       ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:  # fmt: skip
        i, f, g, o = (p + self.hh(state[0])).chunk(4, 1)
        c = torch.sigmoid(f) * state[1] + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, (h, c)


class FastrnnsLNLSTMCell(torch.nn.Module):
    """A layer-norm LSTM cell as fastrnns writes one (``LN_ih(x W_ih^T) + LN_hh(h W_hh^T)``, cell layer norm),
    scripted; the reference design the fused LayerNorm-LSTM is compared with."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.weight_ih = torch.nn.Parameter(torch.randn(4 * hidden_size, input_size) / hidden_size**0.5)
        self.weight_hh = torch.nn.Parameter(torch.randn(4 * hidden_size, hidden_size) / hidden_size**0.5)
        self.ln_ih = torch.nn.LayerNorm(4 * hidden_size)
        self.ln_hh = torch.nn.LayerNorm(4 * hidden_size)
        self.ln_c = torch.nn.LayerNorm(hidden_size)

    def forward(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gates = self.ln_ih(torch.mm(x, self.weight_ih.t())) + self.ln_hh(torch.mm(h, self.weight_hh.t()))
        i, f, g, o = gates.chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(self.ln_c(c)), c


class FastrnnsLNLSTM(torch.nn.Module):
    """The fastrnns-style design: the scripted cell called step by step from a scripted loop (autograd by
    TorchScript). ``x (T, B, I) -> (h_all (T, B, H), (h_T, c_T))``."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.cell = torch.jit.script(FastrnnsLNLSTMCell(input_size, hidden_size))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        h = torch.zeros(x.size(1), self.cell.hidden_size, dtype=x.dtype, device=x.device)
        c = torch.zeros_like(h)
        outputs: list[torch.Tensor] = []
        for t in range(x.size(0)):
            h, c = self.cell(x[t], h, c)
            outputs.append(h)
        return torch.stack(outputs), (h, c)


# (T, B, I=H, inference_only)
CUDA_SIZES = [(100, 64, 512, False), (100, 1, 256, True), (100, 256, 1024, False), (1000, 16, 768, False)]
CPU_SIZES = [(100, 32, 256, False), (50, 64, 128, False), (32, 1, 64, True)]
BUILTIN_CELLS = {
    "lstm": (seqforge.LSTM, {}), "gru": (seqforge.GRU, {}), "ln_lstm": (seqforge.LSTM, {"layer_norm": True})
}  # fmt: skip
CELLS: dict[str, tuple[Any, dict[str, Any]]] = {
    **BUILTIN_CELLS,
    "user_lstm": (functools.partial(seqforge.Recurrent, UserLSTMCell), {}),
    "user_lstm_split": (functools.partial(seqforge.Recurrent, SplitUserLSTMCell), {}),
}
# "torch.nn" is the reference torch.nn.LSTM/GRU itself (flattened cuDNN weights), not a seqforge backend; for
# ln_lstm (torch has no layer-norm kernel) the row "torch.nn-plain" is torch.nn's plain LSTM of the same size,
# timed in the same interleaved group, and "fastrnns" the scripted-cell-in-a-scripted-loop reference.
BACKENDS = ["eager", "script", "compile", "cudnn", "torch.nn", "fastrnns"]
TORCH_NN = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}


def build_layer(cell: str, backend: str, hidden: int, device: str) -> torch.nn.Module | None:
    """The layer to time, or None when ``backend`` cannot run ``cell`` (e.g. cudnn with layer norm)."""
    cls, opts = CELLS[cell]
    if backend == "torch.nn":
        return TORCH_NN[cell](hidden, hidden).to(device) if cell in TORCH_NN else None
    if backend == "torch.nn-plain":
        return torch.nn.LSTM(hidden, hidden).to(device) if cell == "ln_lstm" else None
    if backend == "fastrnns":
        return torch.jit.script(FastrnnsLNLSTM(hidden, hidden)).to(device) if cell == "ln_lstm" else None
    try:
        return cls(hidden, hidden, backend=backend, **opts).to(device)
    except ValueError:
        return None


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--cells", nargs="+", default=list(CELLS), choices=list(CELLS))
    p.add_argument("--backends", nargs="+", default=BACKENDS, choices=BACKENDS)
    p.add_argument("--sizes", nargs="+", default=None, help="T,B,H[,inference] entries (default: per device)")
    p.add_argument("--runs", type=int, default=20, help="timed calls per measurement (median reported)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is robust on a shared machine)")
    p.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                   help="CPU timing: wall time or the process's CPU time (steadier on a shared machine)")
    p.add_argument("--out-dir", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--note", default="", help="a line recorded in the report (e.g. the CUDA test summary)")
    return p.parse_args()


def parse_sizes(entries: list[str] | None, device: str) -> list[tuple[int, int, int, bool]]:
    if entries is None:
        return CUDA_SIZES if device == "cuda" else CPU_SIZES
    sizes = []
    for entry in entries:
        parts = entry.split(",")
        if len(parts) not in (3, 4):
            raise ValueError(f"--sizes: expected T,B,H[,inference], got {entry!r}")
        steps, batch, hidden = (int(v) for v in parts[:3])
        sizes.append((steps, batch, hidden, len(parts) == 4 and parts[3] == "inference"))
    return sizes


Case = tuple[Callable[[Any], None], Callable[[], Any]]  # (timed fn, untimed prepare whose result fn receives)


def time_once(fn: Callable[[Any], None], prepare: Callable[[], Any], cuda: bool, clock: str = "wall") -> float:
    """Time of one ``fn(prepare())`` in ms: CUDA events on CUDA; on CPU ``perf_counter`` (``clock="wall"``) or
    the process's CPU time (``clock="cpu"``, ``process_time``: on a shared machine it leaves out the time other
    processes hold the core, which wall time charges to whichever call was running)."""
    arg = prepare()
    if cuda:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        fn(arg)
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end)
    now = time.process_time if clock == "cpu" else time.perf_counter
    t0 = now()
    fn(arg)
    return (now() - t0) * 1e3


def interleaved_medians(cases: dict[str, Case], runs: int, warmup: int, cuda: bool, clock: str = "wall"
                        ) -> dict[str, float]:  # fmt: skip
    """Median ms of each case; the timed calls of all cases alternate, so load changes hit them alike."""
    for fn, prepare in cases.values():
        for _ in range(warmup):
            fn(prepare())
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(runs):
        for name, (fn, prepare) in cases.items():
            times[name].append(time_once(fn, prepare, cuda, clock))
    return {name: statistics.median(values) for name, values in times.items()}


def backend_cases(layer: Any, x: torch.Tensor, precision: str, inference: bool) -> dict[str, Case]:
    """The "forward" (no_grad), "backward" (after an untimed forward) and "both" measurements of ``layer``."""

    def autocast() -> Any:
        return torch.autocast(x.device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()

    def forward(_: Any) -> None:
        with torch.no_grad(), autocast():
            layer(x)

    def train_forward() -> torch.Tensor:
        with autocast():
            out, _ = layer(x.requires_grad_())
        return out.float().sum()

    cases: dict[str, Case] = {"forward": (forward, lambda: None)}
    if not inference:
        cases["backward"] = (lambda loss: loss.backward(), train_forward)
        cases["both"] = (lambda _: train_forward().backward(), lambda: None)
    return cases


def time_backends(cell: str, size: tuple[int, int, int, bool], device: str, precision: str,
                  args: argparse.Namespace) -> list[dict[str, Any]]:  # fmt: skip
    """One row per backend that supports ``cell``: ms for forward, backward, both (forward only if inference)."""
    steps, batch, hidden, inference = size
    x = torch.randn(steps, batch, hidden, device=device)
    cases: dict[str, Case] = {}
    for backend in [*args.backends, *(["torch.nn-plain"] if "torch.nn" in args.backends else [])]:
        layer = build_layer(cell, backend, hidden, device)
        if layer is None:
            continue
        for kind, case in backend_cases(layer, x, precision, inference).items():
            cases[f"{backend}/{kind}"] = case
    medians = interleaved_medians(cases, args.runs, args.warmup, device == "cuda", args.clock)
    rows: dict[str, dict[str, Any]] = {}
    for name, ms in medians.items():
        backend, kind = name.split("/")
        label = "native" if backend == "cudnn" and device == "cpu" else backend  # torch's kernels on CPU
        row = rows.setdefault(backend, {"cell": cell, "T": steps, "B": batch, "H": hidden, "precision": precision,
                                        "backend": label})  # fmt: skip
        row[kind] = ms
    return list(rows.values())


def parity_checks(device: str, backends: list[str]) -> list[dict[str, Any]]:
    """The float64 parity checks of ``tests/test_fused.py`` against eager, run on ``device`` for ``backends``."""
    checks = []
    for backend in (b for b in ("script", "cudnn", "compile") if b in backends):
        for cell, (cls, opts) in BUILTIN_CELLS.items():  # the user cell's parity is tests/test_recurrent.py's
            layer_check = cls(3, 5, backend="eager", **opts)
            try:
                get_backend(backend).check(layer_check)
            except ValueError:
                continue
            try:
                diff = backend_parity(cls, backend, device, **opts)
            except Exception as err:  # noqa: BLE001  (record any failure of the backend as a failed check)
                checks.append(
                    {"backend": backend, "cell": cell, "max_abs_diff": None, "pass": False, "error": repr(err)}
                )
                continue
            label = "native" if backend == "cudnn" and device == "cpu" else backend
            checks.append({"backend": label, "cell": cell, "max_abs_diff": diff, "pass": diff < PARITY_TOL})
    return checks


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else the machine type."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    return f"{platform.machine()} CPU ({torch.get_num_threads()} threads)"


def to_markdown(report: dict[str, Any]) -> str:
    meta = report["meta"]
    lines = [
        f"# Recurrent backends on {meta['device_name']}",
        "",
        f"torch {meta['torch']}, cuDNN {meta['cudnn']}, {meta['runs']} timed runs (median, ms, "
        f"{meta.get('clock', 'wall')} clock), warm-up {meta['warmup']}, CPU model {meta.get('cpu_model', '?')} "
        f"({meta['cpus']} cores), command: `{meta['command']}`",
        "",
        "fwd+bwd is a training step; ratios compare fwd+bwd (forward alone for inference sizes) with the same",
        "configuration's eager backend, torch.nn reference (for ln_lstm: torch.nn's plain LSTM, `torch.nn-plain`)",
        "and fastrnns-style reference (ln_lstm only). Load average (1 min) before / after: "
        f"{meta['load_before']} / {meta['load_after']}.",
        *(["", f"Note: {meta['note']}"] if meta.get("note") else []),
        "",
        "| cell | T | B | I=H | precision | backend | forward | backward | fwd+bwd | vs eager | vs torch.nn "
        "| vs fastrnns |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["timings"]:

        def same_config(backend: str, r: dict[str, Any] = row) -> dict[str, Any] | None:
            keys = ("cell", "T", "B", "H", "precision")
            return next((o for o in report["timings"] if o["backend"] == backend and all(o[k] == r[k] for k in keys)),
                        None)  # fmt: skip

        key = "both" if "both" in row else "forward"
        torch_ref = "torch.nn-plain" if row["cell"] == "ln_lstm" else "torch.nn"
        refs = map(same_config, ("eager", torch_ref, "fastrnns"))
        ratios = [f"{row[key] / ref[key]:.2f}x" if ref else "-" for ref in refs]

        def fmt(name: str, r: dict[str, Any] = row) -> str:
            return f"{r[name]:.2f}" if name in r else "-"

        lines.append(
            f"| {row['cell']} | {row['T']} | {row['B']} | {row['H']} | {row['precision']} | {row['backend']} | "
            f"{fmt('forward')} | {fmt('backward')} | {fmt('both')} | {ratios[0]} | {ratios[1]} | {ratios[2]} |"
        )
    lines += ["", f"## Parity (float64, lengths, 2 bidirectional layers, vs eager; tol {PARITY_TOL:.0e})", ""]
    lines += ["| backend | cell | max abs diff | pass |", "|---|---|---|---|"]
    for c in report["parity"]:
        diff = "error" if c["max_abs_diff"] is None else f"{c['max_abs_diff']:.2e}"
        lines.append(f"| {c['backend']} | {c['cell']} | {diff} | {'yes' if c['pass'] else 'NO'} |")
    lines += ["", "## TorchScript fusion groups after warm-up (forward / backward loop)", ""]
    for name, fusion in report["fusion"].items():
        lines.append(f"- {name}: {json.dumps(fusion)}")
    return "\n".join(lines) + "\n"


def main() -> None:
    args = parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("benchmark: --device cuda requested but CUDA is not available")
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    precisions = ["fp32", "bf16"] if args.device == "cuda" else ["fp32"]
    load_before = round(os.getloadavg()[0], 2)
    timings = []
    for size in parse_sizes(args.sizes, args.device):
        for cell in args.cells:
            for precision in precisions:
                for row in time_backends(cell, size, args.device, precision, args):
                    print(json.dumps(row), flush=True)
                    timings.append(row)
    fusion = {}
    for cell, mode, ln in (("lstm", "LSTM", False), ("gru", "GRU", False), ("ln_lstm", "LSTM", True)):
        try:
            fusion[cell] = loop_fusion_report(mode, batch=8, hidden=64, steps=5, device=args.device, layer_norm=ln)
        except RuntimeError as err:
            fusion[cell] = {"error": str(err)}
    report = {
        "meta": {
            "device": args.device,
            "device_name": device_name(args.device),
            "torch": torch.__version__,
            "cudnn": torch.backends.cudnn.version(),
            "threads": torch.get_num_threads(),
            "runs": args.runs,
            "warmup": args.warmup,
            "command": "python " + " ".join(sys.argv),
            "load_before": load_before,
            "load_after": round(os.getloadavg()[0], 2),
            "cpus": os.cpu_count(),
            "cpu_model": cpu_model(),
            "clock": args.clock if args.device == "cpu" else "cuda events",
            "note": args.note,
        },
        "timings": timings,
        "parity": parity_checks(args.device, args.backends),
        "fusion": fusion,
    }
    slug = re.sub(r"[^a-z0-9]+", "-", f"{args.device}-{report['meta']['device_name']}".lower()).strip("-")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / f"{slug}.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out_dir / f"{slug}.md").write_text(to_markdown(report))
    print(to_markdown(report))


if __name__ == "__main__":
    main()
