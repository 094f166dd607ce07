"""The recurrent core: :class:`Recurrent` runs any cell (see :mod:`seqforge.cells.base`) over sequences;
``seqforge.RNN``, ``seqforge.LSTM`` and ``seqforge.GRU`` are :class:`Recurrent` over the built-in cells.

``Recurrent`` owns everything around the cell: ``lengths`` and ``PackedSequence`` input, ``hx`` in and the
last *valid* state of each sequence out (stacked as torch: ``(num_layers * D, B, ...)`` per state tensor),
padded outputs zeroed by selection, reversal within lengths, inter-layer dropout, variational recurrent
dropout and zoneout. The loop over layers and directions is :class:`seqforge.layers.loop.LayerLoop`, the
same for every *backend* (``"eager"`` here; the fused ones live in :mod:`seqforge.fused`).

The built-in layers take the arguments of their ``torch.nn`` namesakes and keep their parameter names
(``weight_ih_l0``, ``bias_hh_l1_reverse``, ...), so ``ours.load_state_dict(torch.nn.LSTM(...).state_dict())``
works both ways: the parameters belong to the cells and the layer registers the same ``Parameter`` objects
under torch's flat names (``state_dict`` lists only those).
"""

from __future__ import annotations

import functools
import importlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from seqforge.cells import cells as builtin
from seqforge.cells.base import (
    ArgumentTypeError,
    ShapeError,
    State,
    as_state,
    build_cell,
    cell_name,
    check_cell,
    output_size,
    state_tensors,
)
from seqforge.cells.cells import LayerWeights
from seqforge.fused.backends import traced_backend
from seqforge.fused.registry import Backend, get_backend, kernel_name, register_backend
from seqforge.layers.loop import StepRunner, recurrent_mask, run_backend
from seqforge.layers.masks import check_length_range


class _RunnerCache(dict):
    """Per-backend :class:`LayerLoop` s of a layer: rebuilt on demand, never copied or pickled."""

    def __deepcopy__(self, memo: dict) -> _RunnerCache:
        return _RunnerCache()

    def __reduce__(self) -> tuple:
        return (_RunnerCache, ())


def _check_positive_int(owner: str, arg: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ArgumentTypeError(f"{owner}: {arg} must be a positive int, got {value!r}")
    if value <= 0:
        raise ValueError(f"{owner}: {arg} must be a positive int, got {value!r}")


def _check_bool(owner: str, arg: str, value: Any) -> None:
    """As strict as torch: ``0``, ``1`` or ``"True"`` are refused."""
    if not isinstance(value, bool):
        raise ArgumentTypeError(f"{owner}: {arg} must be a bool, got {value!r} ({type(value).__name__})")


class Recurrent(nn.Module):
    r"""Any cell over variable-length sequences: stacked, optionally bidirectional, with regularizers.

    Args:
        cell: a cell class or a ``functools.partial`` of one (Hydra's ``_partial_: true``), built as
            ``cell(layer_input_size, hidden_size, **cell_kwargs)`` once per layer and direction; it must follow
            the contract of :mod:`seqforge.cells.base` (checked at construction on a tiny probe).
        input_size, hidden_size, num_layers, batch_first, bidirectional: as ``torch.nn.LSTM``.
        dropout: dropout on the outputs of every layer but the last, in training.
        recurrent_dropout: variational dropout on ``state[0]`` before each step (Gal & Ghahramani, 2016): one
            mask per sequence, layer and direction, constant over time; training only.
        zoneout: probability that a unit of the state keeps its previous value (Krueger et al., 2017); in
            evaluation the expected update is used.
        backend: ``"eager"`` (the reference loop), ``"script"`` (TorchScript), ``"compile"``
            (``torch.compile``), ``"cudnn"`` (built-in cells only) or ``"auto"``, which picks one for the
            cell and options and records it in ``backend_used`` (the reason in ``backend_reason``).

    Inputs: ``input``, ``hx``, ``lengths`` — see :meth:`forward`.

    Example:
        >>> import functools, seqforge
        >>> rnn = Recurrent(functools.partial(seqforge.GRUCell, bias=False), 3, 8, num_layers=2, bidirectional=True)
        >>> out, h_n = rnn(torch.randn(5, 4, 3), lengths=torch.tensor([5, 2, 3, 1]))
        >>> out.shape, h_n.shape
        (torch.Size([5, 4, 16]), torch.Size([4, 4, 8]))
    """

    state_names: tuple[str, ...] | None = None  # how errors call the parts of hx (default: hx, hx[0], ...)

    def __init__(
        self,
        cell: Callable[..., nn.Module],
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        *,
        recurrent_dropout: float = 0.0,
        zoneout: float = 0.0,
        backend: str = "auto",
        **cell_kwargs: Any,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        for arg, value in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
            _check_positive_int(name, arg, value)
        _check_bool(name, "batch_first", batch_first)
        if isinstance(dropout, bool) or not (isinstance(dropout, (int, float)) and 0.0 <= dropout <= 1.0):
            raise ValueError(f"{name}: dropout must be a number in [0, 1], got {dropout!r}")
        rates: tuple[tuple[str, Any], ...] = (("recurrent_dropout", recurrent_dropout), ("zoneout", zoneout))
        for arg, value in rates:
            if not (isinstance(value, (int, float)) and 0.0 <= value < 1.0):
                raise ValueError(f"{name}: {arg} must be a number in [0, 1), got {value!r}")
        if dropout > 0 and num_layers == 1:
            warnings.warn(
                f"{name}: dropout={dropout} acts between layers, so it has no effect with num_layers=1",
                stacklevel=2,
            )
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.batch_first = batch_first
        self.dropout: float = float(dropout)
        self.bidirectional = bidirectional
        self.recurrent_dropout = float(recurrent_dropout)
        self.zoneout = float(zoneout)
        self.cell_name = cell_name(cell)
        first = build_cell(cell, input_size, hidden_size, **cell_kwargs)
        self.output_size: int = output_size(first)  # width of h per direction (the cells' output_size)
        # a cell reading Δt as its last input feature gets it at every layer (see seqforge.layers.loop)
        self.time_gaps = getattr(first, "time_gaps", False) is True
        deeper = self.output_size * self.num_directions + int(self.time_gaps)
        sizes = [input_size if k < self.num_directions else deeper for k in range(num_layers * self.num_directions)]
        self.cells = nn.ModuleList([first, *(build_cell(cell, size, hidden_size, **cell_kwargs) for size in sizes[1:])])
        self.state_is_tensor = self._check_cells(sizes)
        self._loops = _RunnerCache()
        self.backend = backend

    def _check_cells(self, sizes: list[int]) -> bool:
        """Probe every cell once (the contract of :mod:`seqforge.cells.base`); whether the state is a lone tensor."""
        kinds = set()
        for cell, size in zip(self.cells, sizes):
            if getattr(cell, "hidden_size", None) != self.hidden_size:
                got = getattr(cell, "hidden_size", None)
                raise ValueError(
                    f"{type(self).__name__}: cell {self.cell_name} has hidden_size={got!r}, expected {self.hidden_size}"
                )
            ref = next(cell.parameters(), None)
            dtype, device = (torch.get_default_dtype(), torch.device("cpu")) if ref is None else (ref.dtype, ref.device)
            kinds.add(check_cell(cell, size, dtype, device))
        return kinds == {True}

    # ------------------------------------------------------------------ options
    @property
    def backend(self) -> str:
        """Name of the backend that runs the loop; setting it checks that the backend supports the cell and options."""
        return self._backend

    @backend.setter
    def backend(self, name: str) -> None:
        previous = self.__dict__.get("_backend")
        self._backend, self.backend_used = name, kernel_name(name, self)  # "auto" records its own choice there
        self.backend_reason = "chosen by the user"
        try:
            get_backend(name).check(self)
        except ValueError:
            if previous is not None:  # a failed switch leaves the working backend in place
                self._backend = self.backend_used = previous
            raise

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def _apply(self, fn: Any, recurse: bool = True) -> Recurrent:
        self._loops.clear()  # runners (scripted copies, compiled steps) are rebuilt for the new tensors
        result = super()._apply(fn, recurse)
        if "backend_used" in self.__dict__:  # torch's kernels are named "cudnn" on CUDA, "native" elsewhere
            self.backend_used = kernel_name(self.backend_used, self)
        return result

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        input: Tensor | PackedSequence,
        hx: State | None = None,
        lengths: Tensor | list[int] | None = None,
    ) -> tuple[Tensor | PackedSequence, State]:
        """Run the layer over a (padded) batch of sequences.

        Args:
            input: ``(T, B, I)`` (``(B, T, I)`` if ``batch_first``), unbatched ``(T, I)``, or a
                ``PackedSequence`` (then ``lengths`` must be omitted and the output is packed too).
            hx: initial state shaped like the cell's state with ``num_layers * D`` stacked in front
                (``(num_layers * D, B, H)``, ``(h_0, c_0)`` for an LSTM cell); zeros when omitted.
            lengths: ``(B,)`` integer lengths in ``[1, T]``; steps at and after a sequence's length are
                padding: they never touch its state, their outputs are zero, and their content (NaN included)
                reaches nothing, in value or gradient.

        Returns:
            ``(output, h_n)``: ``output`` is ``(T, B, D * H_out)`` (``(B, T, D * H_out)`` if ``batch_first``;
            ``H_out`` is the cells' ``output_size``: ``hidden_size``, or ``proj_size`` for a projected LSTM) and
            ``h_n`` is shaped like ``hx`` and holds each sequence's state after its last valid step (for the
            reverse direction: after step 0).
        """
        packed_input = input if isinstance(input, PackedSequence) else None
        if packed_input is not None:
            if lengths is not None:
                raise ValueError(f"{type(self).__name__}: pass lengths or a PackedSequence, not both")
            input, lengths = pad_packed_sequence(packed_input, batch_first=self.batch_first)
        x, unbatched = self._check_input(input)
        if unbatched:
            x = x.unsqueeze(1)
        elif self.batch_first:
            x = x.transpose(0, 1)  # (T, B, I) from here on
        steps, batch = x.shape[0], x.shape[1]
        lens = self._check_lengths(lengths, steps, batch, x.device)
        state = self._check_hx(hx, batch, unbatched, x)
        backend = "eager" if torch.compiler.is_exporting() else self.backend  # every backend's numbers, traceable
        if torch.jit.is_tracing():
            backend = traced_backend(self)  # a loop over time that the trace keeps, or a warning
        output, final = get_backend(backend).forward(self, x, state, lens)
        if unbatched:
            output, final = output.squeeze(1), tuple(s.squeeze(1) for s in final)
        elif self.batch_first:
            output = output.transpose(0, 1)
        result: Tensor | PackedSequence = output
        if packed_input is not None and lens is not None:
            result = _repack_like(output, lens, packed_input, self.batch_first)
        return result, as_state(final, self.state_is_tensor)

    def step(self, x_t: Tensor, state: State | None = None, masks: list[Tensor] | None = None
             ) -> tuple[Tensor, State]:  # fmt: skip
        """One time step of every layer (for decoders): ``x_t (B, I)`` -> ``(h_t (B, H), new_state)``.

        ``state`` and ``new_state`` are shaped as in :meth:`forward`. Runs the eager runners of the same loop.
        ``masks``: the sequence's recurrent-dropout masks from :meth:`recurrent_masks`, the same at every step
        (variational dropout, as :meth:`forward` draws them); without them a step in training with
        ``recurrent_dropout`` draws its own. Unidirectional layers only.
        """
        if self.bidirectional:
            raise ValueError(f"{type(self).__name__}: step() runs one direction; this layer is bidirectional")
        x, _ = self._check_input(x_t.unsqueeze(0), what="x_t")
        hx = self._check_hx(state, x.shape[1], False, x)
        out, final = run_backend(self, "eager", StepRunner, x, hx, None, masks)
        return out[0], as_state(final, self.state_is_tensor)

    def recurrent_masks(self, batch_size: int) -> list[Tensor] | None:
        """One draw of the variational recurrent-dropout masks for ``batch_size`` sequences, one ``(B, ...)`` per
        layer and direction (shaped as ``state[0]``), drawn as :meth:`forward` draws them; hand them to every
        :meth:`step` of the sequences. ``None`` unless training with ``recurrent_dropout > 0``."""
        if not (self.training and self.recurrent_dropout > 0.0):
            return None
        ref = self._reference()
        device, dtype = (None, None) if ref is None else (ref.device, ref.dtype)
        first = self._zero_tensors(batch_size, device, dtype)[0]  # (L*D, B, ...)
        return [recurrent_mask(first[k], self.recurrent_dropout) for k in range(len(self.cells))]

    def _reference(self) -> Tensor | None:
        return next(self.parameters(), None)

    def _check_input(self, input: object, what: str = "input") -> tuple[Tensor, bool]:
        name = type(self).__name__
        if not isinstance(input, Tensor):
            raise TypeError(f"{name}: {what} must be a Tensor or PackedSequence, got {type(input).__name__}")
        if input.dim() not in (2, 3):
            raise ValueError(f"{name}: Expected {what} to be 2D (unbatched) or 3D, got {input.dim()}D instead")
        if input.shape[-1] != self.input_size:
            raise ShapeError(
                f"{name}: {what} has {input.shape[-1]} features (last dim), expected input_size={self.input_size}"
            )
        ref = self._reference()
        if ref is not None and input.dtype != ref.dtype:
            raise ArgumentTypeError(f"{name}: {what} dtype {input.dtype} does not match parameter dtype {ref.dtype}")
        if ref is not None and input.device != ref.device:
            raise ValueError(f"{name}: {what} is on {input.device} but parameters are on {ref.device}")
        time_dim = 1 if (self.batch_first and input.dim() == 3) else 0
        if input.shape[time_dim] == 0:
            raise ValueError(f"{name}: {what} has no time steps (shape {tuple(input.shape)})")
        return input, input.dim() == 2

    def _check_lengths(
        self, lengths: Tensor | list[int] | None, steps: int, batch: int, device: torch.device
    ) -> Tensor | None:
        if lengths is None:
            return None
        name = type(self).__name__
        if not isinstance(lengths, Tensor):
            try:
                lengths = torch.as_tensor(lengths)
            except (TypeError, ValueError, RuntimeError) as err:
                raise TypeError(f"{name}: lengths must be a 1D integer tensor or list, got {lengths!r}") from err
        if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
            raise TypeError(f"{name}: lengths must have an integer dtype, got {lengths.dtype}")
        if lengths.dim() == 0:
            lengths = lengths.reshape(1)
        if lengths.dim() != 1 or lengths.shape[0] != batch:
            raise ValueError(
                f"{name}: lengths must have shape ({batch},) (one per sequence), got {tuple(lengths.shape)}"
            )
        check_length_range(name, lengths, steps)
        return lengths.to(device=device, dtype=torch.long)

    def _state_labels(self, count: int) -> tuple[str, ...]:
        if self.state_names is not None:
            return self.state_names
        return ("hx",) if self.state_is_tensor else tuple(f"hx[{j}]" for j in range(count))

    def init_state(self, batch_size: int, device: Any = None, dtype: torch.dtype | None = None) -> State:
        """The zero state shaped like ``hx``: the cells' ``init_state`` stacked, ``(num_layers * D, B, ...)`` per
        state tensor (a tensor, or a tuple such as ``(h_0, c_0)``, as the cell's state)."""
        return as_state(self._zero_tensors(batch_size, device, dtype), self.state_is_tensor)

    def _zero_tensors(self, batch_size: int, device: Any = None, dtype: torch.dtype | None = None
                      ) -> tuple[Tensor, ...]:  # fmt: skip
        cells: list[Any] = list(self.cells)
        per_cell = [state_tensors(c.init_state(batch_size, device=device, dtype=dtype)) for c in cells]
        return tuple(torch.stack(parts) for parts in zip(*per_cell))

    def _check_hx(self, hx: State | None, batch: int, unbatched: bool, x: Tensor) -> tuple[Tensor, ...]:
        name = type(self).__name__
        zeros = self._zero_tensors(batch, x.device, x.dtype)
        if hx is None:
            return zeros
        labels = self._state_labels(len(zeros))
        if self.state_is_tensor:
            if not isinstance(hx, Tensor):
                raise TypeError(f"{name}: {labels[0]} must be a Tensor, got {type(hx).__name__}")
            parts: tuple[Any, ...] = (hx,)
        else:
            if not isinstance(hx, (tuple, list)) or len(hx) != len(zeros):
                raise TypeError(f"{name}: hx must be a tuple ({', '.join(labels)}), got {type(hx).__name__}")
            parts = tuple(hx)
        out = []
        for part, zero, label in zip(parts, zeros, labels):
            expected = zero.shape[:1] + zero.shape[2:] if unbatched else zero.shape
            if not isinstance(part, Tensor):
                raise TypeError(f"{name}: {label} must be a Tensor, got {type(part).__name__}")
            if part.shape != expected:
                raise ShapeError(
                    f"{name}: {label} must have shape {tuple(expected)} (num_layers * num_directions, batch, ...), "
                    f"got {tuple(part.shape)}"
                )
            if part.dtype != x.dtype or part.device != x.device:
                raise TypeError(f"{name}: {label} is {part.dtype} on {part.device}, input is {x.dtype} on {x.device}")
            out.append(part.unsqueeze(1) if unbatched else part)
        return tuple(out)

    def __prepare_scriptable__(self) -> nn.Module:
        """``torch.jit.script`` of a ``Recurrent`` is refused with what works instead (the built-in layers
        ``RNN``/``LSTM``/``GRU`` script through their TorchScript twin)."""
        raise TypeError(
            f"torch.jit.script({type(self).__name__}({self.cell_name}, ...)): seqforge.Recurrent has no "
            "TorchScript form; use torch.export / seqforge.export (any cell), backend='script' (scripts the cell "
            "inside a scripted loop, in eager Python), or seqforge.RNN/LSTM/GRU, which torch.jit.script accepts"
        )

    def extra_repr(self) -> str:
        s = f"{self.cell_name}, {self.input_size}, {self.hidden_size}"
        defaults = {"num_layers": 1, "batch_first": False, "dropout": 0.0, "bidirectional": False,
                    "recurrent_dropout": 0.0, "zoneout": 0.0, "backend": "auto"}  # fmt: skip
        return s + "".join(f", {k}={getattr(self, k)!r}" for k, d in defaults.items() if getattr(self, k) != d)


def _repack_like(output: Tensor, lengths: Tensor, like: PackedSequence, batch_first: bool) -> PackedSequence:
    """Pack a padded ``output`` with the same layout (batch sizes and ordering) as the input ``like``."""
    batch_dim = 0 if batch_first else 1
    order = like.sorted_indices
    if order is not None:
        output = output.index_select(batch_dim, order.to(output.device))
        lengths = lengths.index_select(0, order.to(lengths.device))
    data = pack_padded_sequence(output, lengths.cpu(), batch_first=batch_first, enforce_sorted=True).data
    return PackedSequence(data, like.batch_sizes, like.sorted_indices, like.unsorted_indices)


def eager_forward(module: Recurrent, x: Tensor, hx: tuple[Tensor, ...], lengths: Tensor | None
                  ) -> tuple[Tensor, tuple[Tensor, ...]]:  # fmt: skip
    """Reference backend: the loop with a Python step loop per direction (any cell)."""
    return run_backend(module, "eager", StepRunner, x, hx, lengths)


register_backend(Backend("eager", eager_forward))


class RecurrentBase(Recurrent):
    """:class:`Recurrent` over a built-in cell with ``torch.nn``'s constructor, names and numbers.

    Subclasses fix ``mode`` and the cell classes; parameters, their init and checks live in the cells
    (:mod:`seqforge.cells.cells`), registered again here under torch's flat names.

    The layers are *not* instances of ``torch.nn.RNNBase``/``torch.nn.LSTM``: inheriting would bring torch's
    flat-weight machinery (``_flat_weights``, its ``_apply`` and ``__setstate__``) that these layers do not
    use and that would act on parameters it does not own. Instead they carry what code written for torch's
    layers reads: the same parameter names, ``all_weights``, ``mode``, ``proj_size``, a ``flatten_parameters``
    no-op and torch's ``repr``. Code that dispatches on the type should test
    ``isinstance(m, (torch.nn.RNNBase, seqforge.layers.RecurrentBase))``.
    """

    mode: str = ""
    cell_classes: tuple[type[builtin.BuiltinCell], type[builtin.BuiltinCell]]  # (plain, layer-normalized)

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        *,
        layer_norm: bool = False,
        recurrent_dropout: float = 0.0,
        zoneout: float = 0.0,
        forget_bias: float | None = None,
        backend: str = "eager",
        cuda_graphs: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        proj_size: int = 0,
        **cell_options: Any,
    ) -> None:
        name = type(self).__name__
        _check_bool(name, "bias", bias)
        if proj_size and self.mode != "LSTM":
            raise ValueError(f"{name}: proj_size is only supported for LSTM, got proj_size={proj_size!r}")
        if proj_size:  # checked by the cell (a non-negative int below hidden_size)
            cell_options["proj_size"] = proj_size
        if forget_bias is not None:  # checked by the cell (an LSTM with bias=True)
            cell_options["forget_bias"] = forget_bias
        self.layer_norm = layer_norm
        self.bias = bias
        self.forget_bias = forget_bias
        self.proj_size = proj_size
        self.cuda_graphs = cuda_graphs
        cell = self.cell_classes[1 if layer_norm else 0]
        super().__init__(
            cell, input_size, hidden_size, num_layers, batch_first, dropout, bidirectional,
            recurrent_dropout=recurrent_dropout, zoneout=zoneout, backend=backend, bias=bias, device=device,
            dtype=dtype, **cell_options,
        )  # fmt: skip
        self._register_flat_names()
        self._register_state_dict_hook(_drop_cell_keys)
        self._aliases: set[str] = set()  # during load_state_dict: the cells' names of the flat ones
        self._register_load_state_dict_pre_hook(_note_aliases, with_module=True)
        self.register_load_state_dict_post_hook(_share_cell_parameters)

    def _flat_names(self) -> list[tuple[str, nn.Module, str]]:
        """``(torch name, cell, cell's name)`` for every parameter, in torch's order."""
        names: list[tuple[str, nn.Module, str]] = []
        for k, cell in enumerate(self.cells):
            sfx = f"_l{k // self.num_directions}" + ("_reverse" if k % self.num_directions else "")
            names.extend((pname + sfx, cell, pname) for pname, _ in cell.named_parameters())
        return names

    def _register_flat_names(self) -> None:
        for flat, cell, pname in self._flat_names():
            self.register_parameter(flat, cell._parameters[pname])

    def _share_flat_parameters(self) -> None:
        """The cells use the objects under the flat names again (after something replaced those)."""
        for flat, cell, pname in self._flat_names():
            cell._parameters[pname] = self._parameters[flat]
        self._loops.clear()

    def _apply(self, fn: Any, recurse: bool = True) -> RecurrentBase:
        super()._apply(fn, recurse)
        self._share_flat_parameters()  # conversions that make new Parameter objects keep one object per parameter
        return self

    def reset_parameters(self) -> None:
        """Each cell's init: weights and biases ``U(-1/sqrt(H), 1/sqrt(H))`` as torch, layer-norm gains 1 and
        shifts 0, and ``forget_bias`` (LSTM) on ``bias_ih`` of the forget gate with ``bias_hh`` zero there."""
        for cell in self.cells:
            cast(builtin.BuiltinCell, cell).reset_parameters()

    def layer_weights(self, layer: int, direction: int) -> LayerWeights:
        """The parameters of ``layer`` (0-based) and ``direction`` (0 forward, 1 reverse)."""
        return cast(builtin.BuiltinCell, self.cells[layer * self.num_directions + direction]).weights()

    @property
    def all_weights(self) -> list[list[nn.Parameter]]:
        """The parameters per layer and direction (``layer * D + direction``), each list in torch's order."""
        return [list(cell.parameters()) for cell in self.cells]

    def __prepare_scriptable__(self) -> nn.Module:
        """What ``torch.jit.script`` compiles for this layer (see :mod:`seqforge.layers.scripted`)."""
        from seqforge.layers.scripted import scripted_twin  # the twin builds on seqforge.fused (imports layers)

        return scripted_twin(self)

    def flatten_parameters(self) -> None:
        """No-op kept for code written against ``torch.nn.RNNBase`` (parameters are never flattened here)."""

    def __repr__(self) -> str:
        """torch's ``repr`` (the cells are an implementation detail): ``LSTM(8, 16, num_layers=2)``."""
        return f"{type(self).__name__}({self.extra_repr()})"

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}" + (f", proj_size={self.proj_size}" if self.proj_size else "")
        defaults = {
            "num_layers": 1, "bias": True, "batch_first": False, "dropout": 0.0, "bidirectional": False,
            "layer_norm": False, "recurrent_dropout": 0.0, "zoneout": 0.0, "forget_bias": None,
            "backend": "eager", "cuda_graphs": True,
        }  # fmt: skip
        return s + "".join(f", {k}={getattr(self, k)!r}" for k, d in defaults.items() if getattr(self, k) != d)


def _drop_cell_keys(module: nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    """``state_dict`` lists each parameter once, under torch's flat name."""
    for key in [k for k in state_dict if k.startswith(prefix + "cells.")]:
        del state_dict[key]


def _note_aliases(module: RecurrentBase, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """Loading: parameters load under their flat names; the cells' names are never reported missing."""
    index = {id(c): i for i, c in enumerate(module.cells)}
    module._aliases = {f"{prefix}cells.{index[id(cell)]}.{pname}" for _, cell, pname in module._flat_names()}


def _share_cell_parameters(module: RecurrentBase, incompatible_keys: Any) -> None:
    """After loading: the cells' names of loaded parameters are not reported missing, and after
    ``load_state_dict(assign=True)`` the flat names point at the cells' (new) parameters again."""
    incompatible_keys.missing_keys[:] = [k for k in incompatible_keys.missing_keys if k not in module._aliases]
    module._aliases = set()
    module._share_flat_parameters()


class RNN(RecurrentBase):
    r"""Multi-layer Elman RNN: :math:`h_t = \tanh(W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh})` (or ReLU).

    Same constructor, call, outputs and ``state_dict`` as :class:`torch.nn.RNN`, plus ``lengths`` in
    ``forward`` and the keyword-only options of :class:`LSTM`.

    Example:
        >>> rnn = RNN(8, 16, num_layers=2, batch_first=True, nonlinearity="relu")
        >>> out, h_n = rnn(torch.randn(4, 5, 8), lengths=torch.tensor([5, 3, 2, 1]))
        >>> out.shape, h_n.shape
        (torch.Size([4, 5, 16]), torch.Size([2, 4, 16]))
    """

    cell_classes = (builtin.RNNCell, builtin.LayerNormRNNCell)
    state_names = ("hx",)

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 **kwargs: Any) -> None:  # fmt: skip
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNN: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        self.mode = "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU"
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         nonlinearity=nonlinearity, **kwargs)  # fmt: skip


class LSTM(RecurrentBase):
    r"""Multi-layer LSTM with torch's gate order ``i, f, g, o``:

    .. math::
        i_t, f_t, g_t, o_t = \sigma, \sigma, \tanh, \sigma\;(W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh}) \\
        c_t = f_t \odot c_{t-1} + i_t \odot g_t, \qquad h_t = o_t \odot \tanh(c_t)

    Args:
        input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional: as ``torch.nn.LSTM``
            (``dropout`` acts on the outputs of every layer but the last, in training).
        proj_size: if ``> 0``, an LSTM with projections exactly as ``torch.nn.LSTM``: ``h_t = W_{hr}(o_t \odot
            \tanh(c_t))`` with ``weight_hr_l{k}[_reverse] (proj_size, hidden_size)``; ``h`` (outputs and
            ``h_0/h_n``, ``(L*D, B, proj_size)``) is ``proj_size`` wide, ``c`` stays ``hidden_size``; the
            output is ``D * proj_size`` wide. Runs on every backend.
        layer_norm: normalize the gate pre-activations and the cell state (see :class:`LayerNormLSTMCell`);
            adds ``ln_{ih,hh,cell}_{weight,bias}_l{k}[_reverse]`` parameters.
        recurrent_dropout: variational dropout on ``h_{t-1}`` before ``W_hh`` (Gal & Ghahramani, 2016): one
            mask per sequence and layer, constant over time; training only.
        zoneout: probability that a unit keeps its previous ``h``/``c`` (Krueger et al., 2017); in
            evaluation the expected update is used.
        forget_bias: if set, initialize the forget-gate bias to this value (Jozefowicz et al., 2015 use 1).
        backend: ``"eager"`` (the reference loop), ``"script"`` (TorchScript loop with a hand-written
            backward), ``"compile"`` (``torch.compile``), ``"cudnn"`` (torch's own kernels on these parameters)
            or ``"auto"`` (the fastest one that supports the options; recorded in ``backend_used``).
        cuda_graphs: let the ``script`` backend capture the whole loop in a CUDA graph for fixed shapes.

    Inputs: ``input``, ``(h_0, c_0)``, ``lengths`` — see :meth:`Recurrent.forward`.
    Outputs: ``output``, ``(h_n, c_n)``.

    Example:
        >>> lstm = LSTM(8, 16, num_layers=2, bidirectional=True, batch_first=True)
        >>> x, lengths = torch.randn(4, 5, 8), torch.tensor([5, 3, 2, 1])
        >>> out, (h_n, c_n) = lstm(x, lengths=lengths)
        >>> out.shape, h_n.shape
        (torch.Size([4, 5, 32]), torch.Size([4, 4, 16]))
    """

    mode = "LSTM"
    cell_classes = (builtin.LSTMCell, builtin.LayerNormLSTMCell)
    state_names = ("h_0", "c_0")


class GRU(RecurrentBase):
    r"""Multi-layer GRU with torch's gate order ``r, z, n``:

    .. math::
        r_t = \sigma(W_{ir} x_t + b_{ir} + W_{hr} h_{t-1} + b_{hr}), \quad
        z_t = \sigma(W_{iz} x_t + b_{iz} + W_{hz} h_{t-1} + b_{hz}) \\
        n_t = \tanh(W_{in} x_t + b_{in} + r_t \odot (W_{hn} h_{t-1} + b_{hn})), \quad
        h_t = (1 - z_t) \odot n_t + z_t \odot h_{t-1}

    Same constructor, call, outputs and ``state_dict`` as :class:`torch.nn.GRU`, plus ``lengths`` in
    ``forward`` and the keyword-only options of :class:`LSTM` (``layer_norm`` as in
    :class:`LayerNormGRUCell`).
    """

    mode = "GRU"
    cell_classes = (builtin.GRUCell, builtin.LayerNormGRUCell)
    state_names = ("hx",)


# ---------------------------------------------------------------------- building from a spec
_LAYERS: dict[str, tuple[type[RecurrentBase], dict[str, Any]]] = {
    "rnn": (RNN, {"nonlinearity": "tanh"}), "rnn_tanh": (RNN, {"nonlinearity": "tanh"}),
    "rnn_relu": (RNN, {"nonlinearity": "relu"}), "lstm": (LSTM, {}), "gru": (GRU, {}),
}  # fmt: skip
# Cells of the package that run through Recurrent, by name (imported when named).
_CELLS = {"indrnn": "seqforge.cells.indrnn.IndRNNCell", "mingru": "seqforge.cells.mingru.MinGRUCell",
          "cfc": "seqforge.cells.cfc.CfCCell"}  # fmt: skip
CellSpec = str | Callable[..., nn.Module] | Mapping[str, Any]


def _import_target(target: Any) -> type[nn.Module]:
    if not isinstance(target, str) or "." not in target:
        raise ValueError(f"cell: _target_ must be a dotted import path such as 'mypkg.cells.MyCell', got {target!r}")
    module_name, _, attr = target.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"cell: _target_ {target!r} cannot be imported ({type(err).__name__}: {err})") from err
    if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        raise ValueError(f"cell: _target_ {target!r} must be an nn.Module subclass, got {obj!r}")
    return obj


def resolve_cell(cell: CellSpec) -> str | Callable[..., nn.Module]:
    """The one place cell specs are read: a built-in layer's name (``rnn``, ``rnn_relu``, ``lstm``, ``gru``; any
    case) comes back lower-cased; the name of another package cell (``indrnn``, ``mingru``, ``cfc``), a class, a
    ``functools.partial`` or a ``{"_target_": ..., **options}`` mapping (a Hydra node, ``_partial_`` allowed)
    comes back as a cell factory."""
    if isinstance(cell, str):
        key = cell.lower()
        if key in _CELLS:
            return _import_target(_CELLS[key])
        if key not in _LAYERS:
            raise ValueError(
                f"cell must be one of {sorted(_LAYERS)}, {sorted(_CELLS)}, a cell class or "
                f"{{_target_: path.to.Cell}}, got {cell!r}"
            )
        return key
    if isinstance(cell, Mapping):
        options = {str(k): v for k, v in cell.items() if k not in ("_target_", "_partial_")}
        if "_target_" not in cell:
            raise ValueError(f"cell: a mapping must name the cell class in _target_, got keys {sorted(options)}")
        return functools.partial(_import_target(cell["_target_"]), **options)
    if isinstance(cell, functools.partial) or (isinstance(cell, type) and issubclass(cell, nn.Module)):
        return cell
    raise ValueError(
        f"cell must be a name, an nn.Module class, a functools.partial or a _target_ mapping, got {cell!r}"
    )


def make_recurrent(cell: CellSpec, input_size: int, hidden_size: int, **kwargs: Any) -> Recurrent:
    """Build a recurrent layer from a cell spec (see :func:`resolve_cell`).

    Built-in names give ``seqforge.RNN/LSTM/GRU`` (``layer_norm``, ``forget_bias``, ``cuda_graphs`` and the
    other options of :class:`LSTM` apply); any other cell gives :class:`Recurrent` (its ``kwargs`` go to
    the layer, the rest to the cell). ``layer_norm=True`` needs a built-in cell.
    """
    spec = resolve_cell(cell)
    if isinstance(spec, str):
        cls, options = _LAYERS[spec]
        return cls(input_size, hidden_size, **options, **kwargs)
    if kwargs.pop("layer_norm", False):
        raise ValueError(f"make_recurrent: layer_norm=True needs a built-in cell, got {cell_name(spec)}")
    return Recurrent(spec, input_size, hidden_size, **kwargs)


def detach_state(state: Tensor | tuple[Tensor, ...] | None) -> Tensor | tuple[Tensor, ...] | None:
    """Cut the autograd history of a recurrent state (truncated BPTT between windows).

    Accepts what the layers return as state: a tensor, a tuple ``(h, c)``, or ``None``.
    """
    if state is None:
        return None
    if isinstance(state, Tensor):
        return state.detach()
    return tuple(s.detach() for s in state)
