"""The fused backends ``"script"``, ``"compile"``, ``"cudnn"``/``"native"`` and ``"auto"`` (registered on import).

Each follows the contract of :mod:`seqforge.fused.registry` and runs through the one layer loop of
:mod:`seqforge.layers.loop` with its own direction runner (``cudnn`` excepted: torch's kernel runs the
whole stack):

- ``script``: the built-in cells run the TorchScript loops with the hand-written backward
  (:mod:`seqforge.fused.function`; CUDA-graph capture on CUDA unless ``module.cuda_graphs = False``); any
  other cell that ``torch.jit.script`` accepts runs scripted inside a scripted step loop
  (:mod:`seqforge.fused.generic`, TorchScript's autograd). Zoneout is rejected (use ``eager``).
- ``compile``: the eager step loop with ``torch.compile`` of the cell's step, for any cell; zoneout rejected.
- ``cudnn`` (also registered as ``native``): torch's own multi-layer kernels
  (``torch._VF.lstm/gru/rnn_tanh/rnn_relu``) on the built-in cells' parameters: cuDNN on CUDA, torch's native
  kernel on CPU, so ``backend_used``, the logs and ``metrics.json`` say ``"native"`` on CPU and ``"cudnn"``
  where cuDNN runs (:func:`seqforge.fused.registry.kernel_name`); ``lengths`` go through
  ``pack_padded_sequence``.
- ``auto``: chooses per cell and options (:func:`choose_backend`); the choice is stored in
  ``module.backend_used``, the reason in ``module.backend_reason``, and logged (``logging.INFO``) when it
  changes. With ``SEQFORGE_AUTO_MEASURE=1`` it measures instead: on the first call for a (cell, options,
  shape bucket, device, dtype, grad mode) it times the eligible backends on that call's input
  (:func:`measure_backends`) and runs the fastest from then on (cached in memory for the process); the
  timings go to ``module.backend_timings``. Measuring is off by default: the winner can differ between runs
  on a loaded machine, and another backend rounds float32 differently, so bitwise reproducibility and
  exact resume need the fixed rule.
"""

from __future__ import annotations

import functools
import logging
import os
import statistics
import time
import warnings
import weakref
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seqforge.cells.base import cell_name
from seqforge.cells.cells import BuiltinCell
from seqforge.fused import kernels
from seqforge.fused.function import fused_recurrence, native_lstm_direction, native_lstm_eligible, projected_inputs
from seqforge.fused.generic import check_scriptable, script_cell_loop
from seqforge.fused.registry import TORCH_KERNELS, Backend, State, get_backend, kernel_name
from seqforge.layers.loop import StepRunner, contract_step, run_backend

log = logging.getLogger(__name__)


def is_builtin(module: Any) -> bool:
    """Whether every cell of ``module`` is a built-in cell (the hand-written kernels and ``cudnn`` apply)."""
    return all(isinstance(cell, BuiltinCell) for cell in module.cells)


def _reject(module: Any, backend: str, options: tuple[str, ...]) -> None:
    """``ValueError`` naming the module and the first of ``options`` it enables that ``backend`` lacks."""
    for option in options:
        value = getattr(module, option, None)
        if value:
            raise ValueError(
                f"{type(module).__name__}(backend={backend!r}): {option}={value!r} is not supported by this "
                f"backend; use backend='eager' (or 'auto', which picks a backend that supports it)"
            )


def check_script(module: Any) -> None:
    """Zoneout is per-step state surgery the scripted loops lack; a non-built-in cell must script."""
    _reject(module, "script", ("zoneout",))
    if not is_builtin(module):
        check_scriptable(module.cells[0])


def check_compile(module: Any) -> None:
    _reject(module, "compile", ("zoneout",))


def check_cudnn(module: Any) -> None:
    """torch's kernels run the built-in cells without layer norm, recurrent dropout or zoneout."""
    name = module.backend if module.backend in TORCH_KERNELS else "cudnn"  # as the user wrote it
    if not is_builtin(module):
        raise ValueError(
            f"{type(module).__name__}(backend={name!r}): cell {module.cell_name} is not a built-in cell; torch's "
            f"kernels run only RNN/LSTM/GRU cells (use 'script', 'compile', 'eager' or 'auto')"
        )
    _reject(module, name, ("layer_norm", "recurrent_dropout", "zoneout"))


class FusedRunner(nn.Module):
    """Direction runner for a built-in cell: the TorchScript loops with the hand-written backward."""

    def __init__(self, cell: BuiltinCell, state_is_tensor: bool, owner: Any) -> None:
        super().__init__()
        self.cell = cell
        self._owner = weakref.ref(owner)  # reads cuda_graphs at call time

    def forward(self, x: Tensor, state: list[Tensor], lengths: Tensor | None, valid: Tensor | None,
                mask: Tensor | None, training: bool, zoneout: float) -> tuple[Tensor, list[Tensor]]:  # fmt: skip
        w = kernels.cell_weights(self.cell)
        mode = self.cell.mode
        assert w[1] is not None  # w_hh
        if native_lstm_eligible(x, w, mode, mask, lengths):
            return native_lstm_direction(x, w, state[0], state[1])
        gi, b_hh, ln_hh_b = projected_inputs(x, w, mode)
        c0 = state[1] if mode == "LSTM" else None
        owner = self._owner()
        graphs = bool(getattr(owner, "cuda_graphs", True))
        states = fused_recurrence(mode, gi, state[0], c0, w[1], b_hh, (w[6], ln_hh_b), (w[8], w[9]), mask, graphs,
                                  w[10])  # fmt: skip
        return states[0], kernels.final_states(states, lengths)


def _generic_script_runner(cell: Any, state_is_tensor: bool) -> nn.Module:
    return script_cell_loop(cell, cell.init_state(1))


def script_forward(module: Any, x: Tensor, hx: State, lengths: Tensor | None) -> tuple[Tensor, State]:
    """Fused TorchScript loops (built-in cells) or the generic scripted step loop (any scriptable cell)."""
    check_script(module)  # cheap after the first call; catches options changed after construction
    if is_builtin(module):
        return run_backend(module, "script", functools.partial(FusedRunner, owner=module), x, hx, lengths)
    if torch.is_inference_mode_enabled():
        # TorchScript's executor fails on inference tensors once it has optimized a graph for autograd
        # ("Inference tensors cannot be saved for backward"): under inference_mode the same step loop runs eagerly.
        return run_backend(module, "eager", StepRunner, x, hx, lengths)
    return run_backend(module, "script", _generic_script_runner, x, hx, lengths)


_COMPILED: dict[str, Any] = {}


def compiled_step(cell: nn.Module, x_t: Tensor, state: tuple[Tensor, ...], mask: Tensor | None, is_tensor: bool
                  ) -> tuple[Tensor, Any]:  # fmt: skip
    """:func:`seqforge.layers.loop.contract_step` through ``torch.compile`` (compiled once per cell class by
    dynamo); if compilation is impossible here (no working inductor toolchain) the step runs eagerly from
    then on and a warning is logged once."""
    step = _COMPILED.get("step")
    if step is None:
        step = _COMPILED["step"] = torch.compile(contract_step, dynamic=False)
    if step is contract_step:
        return contract_step(cell, x_t, state, mask, is_tensor)
    try:
        return step(cell, x_t, state, mask, is_tensor)
    except Exception as err:  # noqa: BLE001  (inductor raises many error types when its toolchain is missing)
        log.warning("torch.compile of the cell step failed (%s: %s); running it eagerly", type(err).__name__, err)
        _COMPILED["step"] = contract_step
        return contract_step(cell, x_t, state, mask, is_tensor)


def compile_forward(module: Any, x: Tensor, hx: State, lengths: Tensor | None) -> tuple[Tensor, State]:
    """The step loop with the ``torch.compile``'d step, for any cell."""
    check_compile(module)
    return run_backend(module, "compile", functools.partial(StepRunner, step=compiled_step), x, hx, lengths)


_VF_FN = {"LSTM": "lstm", "GRU": "gru", "RNN_TANH": "rnn_tanh", "RNN_RELU": "rnn_relu"}


def cudnn_forward(module: Any, x: Tensor, hx: State, lengths: Tensor | None) -> tuple[Tensor, State]:
    """torch's native multi-layer kernel (cuDNN on CUDA) on the built-in cells' parameters."""
    check_cudnn(module)
    flat: list[Tensor] = []
    for cell in module.cells:
        flat.extend(p for p in cell.weights()[:4] if p is not None)  # w_ih, w_hh, b_ih, b_hh as torch orders them
        if cell.proj_size:
            flat.append(cell.weight_hr)  # torch's kernels see projections from h_0 being narrower than c_0
    mode = module.cells[0].mode
    fn = getattr(torch._VF, _VF_FN[mode])
    state: Any = hx if mode == "LSTM" else hx[0]
    args = (module.cells[0].bias, module.num_layers, module.dropout, module.training, module.bidirectional)
    if lengths is None:
        result = fn(x, state, flat, *args, False)
        return result[0], tuple(result[1:])
    packed = pack_padded_sequence(x, lengths.cpu(), enforce_sorted=False)
    order, unorder = packed.sorted_indices, packed.unsorted_indices
    assert order is not None and unorder is not None  # always set by enforce_sorted=False
    state = tuple(s.index_select(1, order) for s in hx) if mode == "LSTM" else hx[0].index_select(1, order)
    result = fn(packed.data, packed.batch_sizes, state, flat, *args)
    out, _ = pad_packed_sequence(packed._replace(data=result[0]), total_length=x.shape[0])
    return out, tuple(s.index_select(1, unorder) for s in result[1:])


def choose(module: Any) -> tuple[str, str]:
    """``(backend, reason)`` that ``auto`` runs for ``module``.

    Built-in cells: ``cudnn`` if the options allow it (the reference to beat on CUDA; torch's native kernel
    is the fastest plain path on CPU), else ``script``, else ``eager`` (``benchmarks/SPEED.md``). Other cells:
    ``eager`` with zoneout or a ``forward_sequence`` (their own whole-sequence form), else ``script`` when the
    cell scripts, else ``eager`` with TorchScript's complaint as the reason.
    """
    if is_builtin(module):
        for name in ("cudnn", "script"):
            try:
                get_backend(name).check(module)
            except ValueError as err:
                reason = str(err)
                continue
            return name, f"built-in cell; {kernel_name(name, module)} supports these options"
        return "eager", reason
    if module.zoneout:
        return "eager", f"zoneout={module.zoneout} runs in the eager step loop"
    if hasattr(module.cells[0], "forward_sequence"):
        return "eager", f"cell {cell_name(module.cells[0])} runs its own forward_sequence"
    try:
        check_script(module)
    except ValueError as err:
        return "eager", str(err)
    return "script", f"cell {cell_name(module.cells[0])} scripts"


def traced_backend(module: Any) -> str:
    """The backend a layer runs under ``torch.jit.trace``: one whose loop over time the trace keeps, so the
    traced module is right at any length and batch size.

    Built-in cells without zoneout run torch's kernels (one op) when the options allow, else the ``script``
    loops (calls of scripted functions, which a trace records as calls): the same function as every backend
    (float64 parity). Any other layer runs ``eager``, whose Python loop the trace unrolls for the example's
    number of steps only: a ``torch.jit.TracerWarning`` says so, attributed to the layer's code so that
    torch's filter of library TracerWarnings does not hide it.
    """
    if is_builtin(module) and not module.zoneout:
        return choose(module)[0]
    warnings.warn(
        f"{type(module).__name__}: torch.jit.trace records the loop over time for exactly this input's number "
        f"of steps ({_untraceable_reason(module)}); the traced module is wrong at any other length (use "
        f"torch.jit.script, which keeps the loop, or torch.export)",
        torch.jit.TracerWarning,
        stacklevel=2,  # the layer's forward (seqforge.layers.recurrent): torch hides TracerWarnings from torch.*
    )
    return "eager"


def _untraceable_reason(module: Any) -> str:
    if module.zoneout:
        return f"zoneout={module.zoneout} runs in the eager step loop"
    return f"cell {cell_name(module.cells[0])} runs in the eager step loop"


def choose_backend(module: Any) -> str:
    """The backend ``auto`` runs for ``module`` (see :func:`choose`)."""
    return choose(module)[0]


MEASURE_ENV = "SEQFORGE_AUTO_MEASURE"
MEASURE_CANDIDATES = ("cudnn", "script", "eager")  # compile is left out: it compiles for tens of seconds
MEASURE_CALLS = 3  # timed calls per candidate after one warm-up call (median kept)
_MEASURED: dict[tuple[Any, ...], tuple[str, dict[str, float]]] = {}


def measuring_enabled() -> bool:
    """Whether ``auto`` measures (``SEQFORGE_AUTO_MEASURE=1``); off by default, see the module docstring."""
    value = os.environ.get(MEASURE_ENV, "0")
    if value not in ("0", "1"):
        raise ValueError(f"{MEASURE_ENV}: expected '0' or '1', got {value!r}")
    return value == "1"


def eligible_backends(module: Any) -> list[str]:
    """The backends ``auto`` may measure for ``module``: those of :data:`MEASURE_CANDIDATES` whose check
    passes and, for a non-built-in cell, only what the rule allows besides ``eager``."""
    if not is_builtin(module):
        return sorted({choose(module)[0], "eager"}, key=MEASURE_CANDIDATES.index)
    names = []
    for name in MEASURE_CANDIDATES:
        try:
            get_backend(name).check(module)
        except ValueError:
            continue
        names.append(name)
    return names


def _bucket(n: int) -> int:
    """The power of two at or above ``n`` (shapes in one bucket share a measurement)."""
    return 1 << max(n - 1, 0).bit_length()


def measure_key(module: Any, x: Tensor, lengths: Tensor | None) -> tuple[Any, ...]:
    """(cell, options, shape bucket, device, dtype, grad mode) a measurement is cached under."""
    options = tuple(getattr(module, k, None) for k in ("num_layers", "bidirectional", "layer_norm", "dropout",
                                                        "recurrent_dropout", "zoneout", "training"))  # fmt: skip
    shape = (_bucket(x.shape[0]), _bucket(x.shape[1]), x.shape[2], module.hidden_size, lengths is not None)
    grad = torch.is_grad_enabled() and any(p.requires_grad for p in module.parameters())
    return (type(module.cells[0]).__qualname__, options, shape, x.device.type, x.dtype, grad)


def measure_backends(module: Any, x: Tensor, hx: State, lengths: Tensor | None, names: list[str]
                     ) -> dict[str, float]:  # fmt: skip
    """Median ms of each of ``names`` on this input: a forward, plus the gradient of the parameters when grad
    mode is on (by ``torch.autograd.grad``: nothing accumulates in ``.grad``). Calls alternate between the
    backends; the random state is restored afterwards, so dropout masks drawn later are unchanged."""
    x, hx = x.detach(), tuple(h.detach() for h in hx)
    params = [p for p in module.parameters() if p.requires_grad] if torch.is_grad_enabled() else []
    cuda = x.device.type == "cuda"

    def call(name: str) -> None:
        out, _ = get_backend(name).forward(module, x, hx, lengths)
        if params:
            torch.autograd.grad(out.float().sum(), params, allow_unused=True)
        if cuda:
            torch.cuda.synchronize()

    times: dict[str, list[float]] = {name: [] for name in names}
    with torch.random.fork_rng(devices=[x.device] if cuda else []):
        for name in names:
            call(name)  # warm-up: TorchScript profiling runs, CUDA graph capture, allocator
        for _ in range(MEASURE_CALLS):
            for name in names:
                start = time.perf_counter()
                call(name)
                times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(values) for name, values in times.items()}


def _measured_choice(module: Any, x: Tensor, hx: State, lengths: Tensor | None) -> tuple[str, str] | None:
    """The measured ``(backend, reason)`` (cached per :func:`measure_key`), or None where nothing is to
    measure (one eligible backend, or inside tracing, compiling or CUDA-graph capture)."""
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return None
    if x.device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        return None
    names = eligible_backends(module)
    if len(names) < 2:
        return None
    key = (*measure_key(module, x, lengths), tuple(names))
    if key not in _MEASURED:
        timings = measure_backends(module, x, hx, lengths, names)
        _MEASURED[key] = (min(timings, key=timings.__getitem__), timings)
    name, timings = _MEASURED[key]
    module.backend_timings = dict(timings)
    listed = ", ".join(f"{kernel_name(n, module)} {ms:.2f} ms" for n, ms in timings.items())
    return name, f"measured (median of {MEASURE_CALLS} calls): {listed}"


def _record_choice(module: Any, inputs: tuple[Tensor, State, Tensor | None] | None = None) -> str:
    """Choose for ``module`` (measuring on ``inputs`` when enabled), store the choice in
    ``module.backend_used`` (torch's kernels by :func:`kernel_name`: ``"native"`` on CPU) and log it when it
    changes; return the registered name to run."""
    measured = _measured_choice(module, *inputs) if inputs is not None and measuring_enabled() else None
    name, reason = measured if measured is not None else choose(module)
    module.backend_reason = reason
    used = kernel_name(name, module)
    if module.backend_used != used:
        log.info("%s(backend='auto') runs backend %r", type(module).__name__, used)
        module.backend_used = used
    return name


def auto_forward(module: Any, x: Tensor, hx: State, lengths: Tensor | None) -> tuple[Tensor, State]:
    """Run the backend :func:`choose_backend` picks, or with measuring on the measured fastest (re-chosen if
    the options changed since construction)."""
    return get_backend(_record_choice(module, (x, hx, lengths))).forward(module, x, hx, lengths)


def _check_auto(module: Any) -> None:
    """Every option has at least the eager path: never raises; makes (and logs) the choice."""
    _record_choice(module)


SCRIPT = Backend("script", script_forward, check_script)
COMPILE = Backend("compile", compile_forward, check_compile)
CUDNN = Backend("cudnn", cudnn_forward, check_cudnn)
NATIVE = Backend("native", cudnn_forward, check_cudnn)  # the same kernels under the name they have on CPU
AUTO = Backend("auto", auto_forward, _check_auto)
