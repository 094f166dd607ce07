"""Multi-layer, optionally bidirectional recurrent layers with torch.nn's constructor and state_dict.

``seqforge.RNN``, ``seqforge.LSTM`` and ``seqforge.GRU`` take the arguments of their ``torch.nn``
namesakes and keep their parameter names (``weight_ih_l0``, ``bias_hh_l1_reverse``, ...), so
``ours.load_state_dict(torch.nn.LSTM(...).state_dict())`` works both ways. On top of torch they accept
``lengths`` for variable-length batches and the regularizers and options below. The loop itself is run by a
*backend* (``"eager"`` here; the fused ones live in :mod:`seqforge.fused`).
"""

from __future__ import annotations

import math
import warnings
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from seqforge.cells import functional as SF
from seqforge.fused.registry import Backend, State, get_backend, register_backend

_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


class LayerWeights(NamedTuple):
    """The parameters of one layer and direction; absent ones are ``None``."""

    w_ih: Tensor
    w_hh: Tensor
    b_ih: Tensor | None
    b_hh: Tensor | None
    ln_ih_weight: Tensor | None
    ln_ih_bias: Tensor | None
    ln_hh_weight: Tensor | None
    ln_hh_bias: Tensor | None
    ln_cell_weight: Tensor | None
    ln_cell_bias: Tensor | None


class RecurrentBase(nn.Module):
    """Parameters, validation and layout handling shared by :class:`RNN`, :class:`LSTM` and :class:`GRU`.

    Subclasses fix ``mode``; the computation is delegated to the backend named by ``backend``.
    """

    mode: str = ""

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
    ) -> None:
        super().__init__()
        name = type(self).__name__
        sizes: tuple[tuple[str, Any], ...] = (
            ("input_size", input_size),
            ("hidden_size", hidden_size),
            ("num_layers", num_layers),
        )
        for arg, value in sizes:
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name}: {arg} must be a positive int, got {value!r}")
        if not (isinstance(dropout, (int, float)) and 0.0 <= dropout <= 1.0):
            raise ValueError(f"{name}: dropout must be a number in [0, 1], got {dropout!r}")
        rates: tuple[tuple[str, Any], ...] = (("recurrent_dropout", recurrent_dropout), ("zoneout", zoneout))
        for arg, value in rates:
            if not (isinstance(value, (int, float)) and 0.0 <= value < 1.0):
                raise ValueError(f"{name}: {arg} must be a number in [0, 1), got {value!r}")
        if forget_bias is not None and (self.mode != "LSTM" or not bias):
            raise ValueError(f"{name}: forget_bias needs an LSTM with bias=True, got forget_bias={forget_bias!r}")
        if dropout > 0 and num_layers == 1:
            warnings.warn(
                f"{name}: dropout={dropout} acts between layers, so it has no effect with num_layers=1",
                stacklevel=2,
            )
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout: float = float(dropout)
        self.bidirectional = bidirectional
        self.layer_norm = layer_norm
        self.recurrent_dropout = float(recurrent_dropout)
        self.zoneout = float(zoneout)
        self.forget_bias = forget_bias
        self.cuda_graphs = cuda_graphs
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        gates = _GATES[self.mode] * hidden_size
        for layer in range(num_layers):
            layer_in = input_size if layer == 0 else hidden_size * self.num_directions
            for direction in range(self.num_directions):
                sfx = self._suffix(layer, direction)
                self.register_parameter(f"weight_ih{sfx}", nn.Parameter(torch.empty(gates, layer_in, **factory)))
                self.register_parameter(f"weight_hh{sfx}", nn.Parameter(torch.empty(gates, hidden_size, **factory)))
                if bias:
                    self.register_parameter(f"bias_ih{sfx}", nn.Parameter(torch.empty(gates, **factory)))
                    self.register_parameter(f"bias_hh{sfx}", nn.Parameter(torch.empty(gates, **factory)))
                if layer_norm:
                    for part in ("ih", "hh"):
                        for kind in ("weight", "bias"):
                            param = nn.Parameter(torch.empty(gates, **factory))
                            self.register_parameter(f"ln_{part}_{kind}{sfx}", param)
                    if self.mode == "LSTM":
                        for kind in ("weight", "bias"):
                            param = nn.Parameter(torch.empty(hidden_size, **factory))
                            self.register_parameter(f"ln_cell_{kind}{sfx}", param)
        self.reset_parameters()
        self.backend = backend

    @property
    def backend(self) -> str:
        """Name of the backend that runs the loop; setting it checks that the backend supports the options."""
        return self._backend

    @backend.setter
    def backend(self, name: str) -> None:
        previous = self.__dict__.get("_backend")
        self._backend, self.backend_used = name, name  # "auto" records its own choice in backend_used
        try:
            get_backend(name).check(self)
        except ValueError:
            if previous is not None:  # a failed switch leaves the working backend in place
                self._backend = self.backend_used = previous
            raise

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @staticmethod
    def _suffix(layer: int, direction: int) -> str:
        return f"_l{layer}" + ("_reverse" if direction == 1 else "")

    def reset_parameters(self) -> None:
        """Weights and biases ``U(-1/sqrt(H), 1/sqrt(H))`` as torch; layer-norm gains 1 and shifts 0.

        With ``forget_bias`` set, the LSTM forget-gate biases are then set so that
        ``bias_ih_f + bias_hh_f = forget_bias`` (``bias_ih_f = forget_bias``, ``bias_hh_f = 0``).
        """
        bound = 1.0 / math.sqrt(self.hidden_size)
        for pname, param in self.named_parameters():
            if pname.startswith("ln_"):
                nn.init.ones_(param) if pname.startswith(("ln_ih_weight", "ln_hh_weight", "ln_cell_weight")) else (
                    nn.init.zeros_(param)
                )
            else:
                nn.init.uniform_(param, -bound, bound)
        if self.forget_bias is not None:
            hid = self.hidden_size
            with torch.no_grad():
                for layer in range(self.num_layers):
                    for direction in range(self.num_directions):
                        sfx = self._suffix(layer, direction)
                        getattr(self, f"bias_ih{sfx}")[hid : 2 * hid].fill_(self.forget_bias)
                        getattr(self, f"bias_hh{sfx}")[hid : 2 * hid].zero_()

    def layer_weights(self, layer: int, direction: int) -> LayerWeights:
        """The parameters of ``layer`` (0-based) and ``direction`` (0 forward, 1 reverse)."""
        sfx = self._suffix(layer, direction)
        return LayerWeights(*(getattr(self, f"{n}{sfx}", None) for n in (  # type: ignore[arg-type]
            "weight_ih", "weight_hh", "bias_ih", "bias_hh", "ln_ih_weight", "ln_ih_bias",
            "ln_hh_weight", "ln_hh_bias", "ln_cell_weight", "ln_cell_bias",
        )))  # fmt: skip

    def flatten_parameters(self) -> None:
        """No-op kept for code written against ``torch.nn.RNNBase`` (parameters are never flattened here)."""

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        defaults = {
            "num_layers": 1, "bias": True, "batch_first": False, "dropout": 0.0, "bidirectional": False,
            "layer_norm": False, "recurrent_dropout": 0.0, "zoneout": 0.0, "forget_bias": None,
            "backend": "eager",
            "cuda_graphs": True,
        }  # fmt: skip
        for key, default in defaults.items():
            if getattr(self, key) != default:
                s += f", {key}={getattr(self, key)!r}"
        return s

    # ------------------------------------------------------------------ forward
    def _state_count(self) -> int:
        return 2 if self.mode == "LSTM" else 1

    def forward(
        self,
        input: Tensor | PackedSequence,
        hx: Tensor | tuple[Tensor, Tensor] | None = None,
        lengths: Tensor | list[int] | None = None,
    ) -> tuple[Tensor | PackedSequence, Tensor | tuple[Tensor, Tensor]]:
        """Run the layer over a (padded) batch of sequences.

        Args:
            input: ``(T, B, I)`` (``(B, T, I)`` if ``batch_first``), unbatched ``(T, I)``, or a
                ``PackedSequence`` (then ``lengths`` must be omitted and the output is packed too).
            hx: initial state ``(num_layers * D, B, H)`` (``(h0, c0)`` for the LSTM); zeros when omitted.
            lengths: ``(B,)`` integer lengths in ``[1, T]``; steps at and after a sequence's length are
                padding: they never touch its state and their outputs are zero.

        Returns:
            ``(output, h_n)``, or ``(output, (h_n, c_n))`` for the LSTM: ``output`` is ``(T, B, D * H)``
            (``(B, T, D * H)`` if ``batch_first``) and ``h_n``/``c_n`` ``(num_layers * D, B, H)`` hold each
            sequence's state after its last valid step (for the reverse direction: after step 0).
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
        output, final = get_backend(self.backend).forward(self, x, state, lens)
        if unbatched:
            output, final = output.squeeze(1), tuple(s.squeeze(1) for s in final)
        elif self.batch_first:
            output = output.transpose(0, 1)
        result: Tensor | PackedSequence = output
        if packed_input is not None and lens is not None:
            result = _repack_like(output, lens, packed_input, self.batch_first)
        return result, ((final[0], final[1]) if self.mode == "LSTM" else final[0])

    def _check_input(self, input: object) -> tuple[Tensor, bool]:
        name = type(self).__name__
        if not isinstance(input, Tensor):
            raise TypeError(f"{name}: input must be a Tensor or PackedSequence, got {type(input).__name__}")
        if input.dim() not in (2, 3):
            raise ValueError(f"{name}: Expected input to be 2D (unbatched) or 3D, got {input.dim()}D instead")
        if input.shape[-1] != self.input_size:
            raise ValueError(
                f"{name}: input has {input.shape[-1]} features (last dim), expected input_size={self.input_size}"
            )
        ref = self.weight_ih_l0
        if input.dtype != ref.dtype:
            raise TypeError(f"{name}: input dtype {input.dtype} does not match parameter dtype {ref.dtype}")
        if input.device != ref.device:
            raise ValueError(f"{name}: input is on {input.device} but parameters are on {ref.device}")
        time_dim = 1 if (self.batch_first and input.dim() == 3) else 0
        if input.shape[time_dim] == 0:
            raise ValueError(f"{name}: input has no time steps (shape {tuple(input.shape)})")
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
        lo, hi = int(lengths.min()), int(lengths.max())
        if lo < 1 or hi > steps:
            raise ValueError(f"{name}: lengths must lie in [1, {steps}] (the padded length), got min {lo}, max {hi}")
        return lengths.to(device=device, dtype=torch.long)

    def _check_hx(self, hx: Tensor | tuple[Tensor, ...] | None, batch: int, unbatched: bool, x: Tensor) -> State:
        name = type(self).__name__
        layers = self.num_layers * self.num_directions
        if hx is None:
            zeros = x.new_zeros(layers, batch, self.hidden_size)
            return tuple(zeros for _ in range(self._state_count()))
        parts: tuple[Tensor, ...]
        if self.mode == "LSTM":
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError(f"{name}: hx must be a tuple (h_0, c_0), got {type(hx).__name__}")
            parts, labels = tuple(hx), ("h_0", "c_0")
        else:
            if not isinstance(hx, Tensor):
                raise TypeError(f"{name}: hx must be a Tensor, got {type(hx).__name__}")
            parts, labels = (hx,), ("hx", "")
        expected = (layers, self.hidden_size) if unbatched else (layers, batch, self.hidden_size)
        out = []
        for part, label in zip(parts, labels):
            if not isinstance(part, Tensor):
                raise TypeError(f"{name}: {label} must be a Tensor, got {type(part).__name__}")
            if tuple(part.shape) != expected:
                raise ValueError(
                    f"{name}: {label} must have shape {expected} (num_layers * num_directions, batch, hidden_size), "
                    f"got {tuple(part.shape)}"
                )
            if part.dtype != x.dtype or part.device != x.device:
                raise TypeError(f"{name}: {label} is {part.dtype} on {part.device}, input is {x.dtype} on {x.device}")
            out.append(part.unsqueeze(1) if unbatched else part)
        return tuple(out)


def _repack_like(output: Tensor, lengths: Tensor, like: PackedSequence, batch_first: bool) -> PackedSequence:
    """Pack a padded ``output`` with the same layout (batch sizes and ordering) as the input ``like``."""
    batch_dim = 0 if batch_first else 1
    order = like.sorted_indices
    if order is not None:
        output = output.index_select(batch_dim, order.to(output.device))
        lengths = lengths.index_select(0, order.to(lengths.device))
    data = pack_padded_sequence(output, lengths.cpu(), batch_first=batch_first, enforce_sorted=True).data
    return PackedSequence(data, like.batch_sizes, like.sorted_indices, like.unsorted_indices)


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

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 **kwargs) -> None:  # fmt: skip
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNN: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        self.mode = "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU"
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, **kwargs)


class LSTM(RecurrentBase):
    r"""Multi-layer LSTM with torch's gate order ``i, f, g, o``:

    .. math::
        i_t, f_t, g_t, o_t = \sigma, \sigma, \tanh, \sigma\;(W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh}) \\
        c_t = f_t \odot c_{t-1} + i_t \odot g_t, \qquad h_t = o_t \odot \tanh(c_t)

    Args:
        input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional: as ``torch.nn.LSTM``
            (``dropout`` acts on the outputs of every layer but the last, in training).
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

    Inputs: ``input``, ``(h_0, c_0)``, ``lengths`` — see :meth:`RecurrentBase.forward`.
    Outputs: ``output``, ``(h_n, c_n)``.

    Example:
        >>> lstm = LSTM(8, 16, num_layers=2, bidirectional=True, batch_first=True)
        >>> x, lengths = torch.randn(4, 5, 8), torch.tensor([5, 3, 2, 1])
        >>> out, (h_n, c_n) = lstm(x, lengths=lengths)
        >>> out.shape, h_n.shape
        (torch.Size([4, 5, 32]), torch.Size([4, 4, 16]))
    """

    mode = "LSTM"


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


# ---------------------------------------------------------------------- eager backend
def reverse_padded(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Reverse each sequence of a time-major ``(T, B, *)`` batch within its own length.

    Padded steps stay where they are, so applying it twice is the identity.
    """
    if lengths is None:
        return x.flip(0)
    steps = x.shape[0]
    t = torch.arange(steps, device=x.device).unsqueeze(1)  # (T, 1)
    index = torch.where(t < lengths, lengths - 1 - t, t)  # (T, B)
    index = index.view(steps, -1, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(0, index)


def _variational_mask(module: RecurrentBase, like: Tensor) -> Tensor | None:
    p = module.recurrent_dropout
    if not module.training or p == 0.0:
        return None
    return torch.bernoulli(torch.full_like(like, 1.0 - p)) / (1.0 - p)


def _run_direction(module: RecurrentBase, x: Tensor, state: State, w: LayerWeights, valid: Tensor | None
                   ) -> tuple[Tensor, State]:  # fmt: skip
    """One layer, one direction, time-major ``x (T, B, I)``; ``valid (T, B, 1)`` marks real steps."""
    gi_all = SF.project(x, w.w_ih, w.b_ih, w.ln_ih_weight, w.ln_ih_bias)  # (T, B, G*H), one matmul
    mask = _variational_mask(module, state[0])
    zone, training = module.zoneout, module.training
    outputs = []
    for t in range(x.shape[0]):
        h = state[0]
        h_in = h if mask is None else h * mask
        gh = SF.project(h_in, w.w_hh, w.b_hh, w.ln_hh_weight, w.ln_hh_bias)
        new: State
        if module.mode == "LSTM":
            new = SF.lstm_pointwise(gi_all[t], gh, state[1], w.ln_cell_weight, w.ln_cell_bias)
        elif module.mode == "GRU":
            new = (SF.gru_pointwise(gi_all[t], gh, h),)
        else:
            new = (SF.rnn_pointwise(gi_all[t], gh, "tanh" if module.mode == "RNN_TANH" else "relu"),)
        if zone > 0.0:
            new = tuple(SF.zoneout(old, nxt, zone, training) for old, nxt in zip(state, new))
        if valid is None:
            state, out = new, new[0]
        else:
            keep = valid[t]
            state = tuple(torch.where(keep, nxt, old) for old, nxt in zip(state, new))
            out = new[0] * keep
        outputs.append(out)
    return torch.stack(outputs), state


def eager_forward(module: RecurrentBase, x: Tensor, hx: State, lengths: Tensor | None) -> tuple[Tensor, State]:
    """Reference backend: a Python loop over steps built from :mod:`seqforge.cells.functional`."""
    steps = x.shape[0]
    valid = None
    if lengths is not None:
        valid = (torch.arange(steps, device=x.device).unsqueeze(1) < lengths).unsqueeze(-1)  # (T, B, 1)
    finals: list[list[Tensor]] = [[] for _ in hx]
    layer_input = x
    for layer in range(module.num_layers):
        outs = []
        for direction in range(module.num_directions):
            idx = layer * module.num_directions + direction
            state = tuple(s[idx] for s in hx)
            inp = layer_input if direction == 0 else reverse_padded(layer_input, lengths)
            out, state = _run_direction(module, inp, state, module.layer_weights(layer, direction), valid)
            outs.append(out if direction == 0 else reverse_padded(out, lengths))
            for bucket, s in zip(finals, state):
                bucket.append(s)
        layer_input = torch.cat(outs, dim=-1) if len(outs) > 1 else outs[0]
        if layer < module.num_layers - 1 and module.dropout > 0.0:
            layer_input = F.dropout(layer_input, module.dropout, module.training)
    return layer_input, tuple(torch.stack(bucket) for bucket in finals)


register_backend(Backend("eager", eager_forward))


# ---------------------------------------------------------------------- helpers
_CELLS = {"rnn": (RNN, "tanh"), "rnn_tanh": (RNN, "tanh"), "rnn_relu": (RNN, "relu"), "lstm": (LSTM, None),
          "gru": (GRU, None)}  # fmt: skip


def make_recurrent(cell: str, input_size: int, hidden_size: int, **kwargs) -> RecurrentBase:
    """Build a recurrent layer by cell name: ``"rnn"`` (tanh), ``"rnn_relu"``, ``"lstm"`` or ``"gru"``.

    ``kwargs`` go to the layer (``num_layers``, ``bidirectional``, ``layer_norm``, ``backend``, ...).
    """
    key = cell.lower() if isinstance(cell, str) else cell
    if key not in _CELLS:
        raise ValueError(f"make_recurrent: cell must be one of {sorted(_CELLS)}, got {cell!r}")
    cls, nonlinearity = _CELLS[key]
    if nonlinearity is not None:
        kwargs["nonlinearity"] = nonlinearity
    return cls(input_size, hidden_size, **kwargs)


def detach_state(state: Tensor | tuple[Tensor, ...] | None) -> Tensor | tuple[Tensor, ...] | None:
    """Cut the autograd history of a recurrent state (truncated BPTT between windows).

    Accepts what the layers return as state: a tensor, a tuple ``(h, c)``, or ``None``.
    """
    if state is None:
        return None
    if isinstance(state, Tensor):
        return state.detach()
    return tuple(s.detach() for s in state)
