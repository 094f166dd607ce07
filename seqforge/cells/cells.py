"""One-step recurrent cells with ``torch.nn``'s parameter contract.

Every cell owns ``weight_ih (G*H, I)``, ``weight_hh (G*H, H)`` and, with ``bias=True``, ``bias_ih (G*H,)``
and ``bias_hh (G*H,)``, initialized ``U(-1/sqrt(H), 1/sqrt(H))`` like ``torch.nn``, so
``ours.load_state_dict(torch.nn.LSTMCell(...).state_dict())`` works and gives the same outputs.
Layer-normalized cells add ``ln_ih_weight/ln_ih_bias`` and ``ln_hh_weight/ln_hh_bias`` (over the
``G*H`` gate pre-activations) and, for the LSTM, ``ln_cell_weight/ln_cell_bias`` (over the cell state
fed to the output ``tanh``); see :mod:`seqforge.cells.functional` for the equations.

Inputs: ``input (B, I)`` or unbatched ``(I,)``; state ``(B, H)`` (``(H,)`` unbatched), zeros when omitted.

Besides torch's ``forward(input, hx=None)``, every cell follows the cell contract of
:mod:`seqforge.cells.base` through ``init_state(batch_size, device, dtype)`` and
``step(x_t, state) -> (h_t, new_state)`` (no checks, batched only: what the recurrent core calls).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from seqforge.cells import functional as SF
from seqforge.cells.base import ArgumentTypeError, ShapeError

_NONLINEARITIES = ("tanh", "relu")


class LayerWeights(NamedTuple):
    """The parameters of one built-in cell, in torch's order; absent ones are ``None``."""

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


class BuiltinCell(nn.Module):
    """Shared parameters, initialization and input checks for the built-in cells."""

    num_gates: int = 1
    layer_norm: bool = False
    normalize_cell: bool = False
    mode: str = ""  # torch's name of the recurrence: "RNN_TANH", "RNN_RELU", "LSTM", "GRU"
    takes_recurrent_mask = True  # step() applies a recurrent-dropout mask to h before W_hh only

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        forget_bias: float | None = None,
        proj_size: int = 0,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        # torch accepts hidden_size=0 for cells (not for layers): outputs are then (B, 0)
        for arg, value, least in (("input_size", input_size, 1), ("hidden_size", hidden_size, 0),
                                  ("proj_size", proj_size, 0)):  # fmt: skip
            kind = "a positive" if least else "a non-negative"
            if not isinstance(value, int) or isinstance(value, bool):
                raise ArgumentTypeError(f"{name}: {arg} must be {kind} int, got {value!r}")
            if value < least:
                raise ValueError(f"{name}: {arg} must be {kind} int, got {value!r}")
        if forget_bias is not None and (self.mode != "LSTM" or not bias):
            raise ValueError(f"{name}: forget_bias needs an LSTM with bias=True, got forget_bias={forget_bias!r}")
        if proj_size and (self.mode != "LSTM" or proj_size >= hidden_size):
            raise ValueError(
                f"{name}: proj_size needs an LSTM cell and must be smaller than hidden_size={hidden_size}, "
                f"got proj_size={proj_size!r}"
            )
        self.forget_bias = forget_bias
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.proj_size = proj_size
        self.output_size = proj_size or hidden_size  # width of h (the cell contract's output_size)
        self.bias = bias
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        gates = self.num_gates * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(gates, input_size, **factory))
        self.weight_hh = nn.Parameter(torch.empty(gates, self.output_size, **factory))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(gates, **factory))
            self.bias_hh = nn.Parameter(torch.empty(gates, **factory))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        if proj_size:  # torch's name and place (after the biases): h = W_hr (o * tanh(c))
            self.weight_hr = nn.Parameter(torch.empty(proj_size, hidden_size, **factory))
        if self.layer_norm:
            self.ln_ih_weight = nn.Parameter(torch.empty(gates, **factory))
            self.ln_ih_bias = nn.Parameter(torch.empty(gates, **factory))
            self.ln_hh_weight = nn.Parameter(torch.empty(gates, **factory))
            self.ln_hh_bias = nn.Parameter(torch.empty(gates, **factory))
        if self.normalize_cell:
            self.ln_cell_weight = nn.Parameter(torch.empty(hidden_size, **factory))
            self.ln_cell_bias = nn.Parameter(torch.empty(hidden_size, **factory))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``U(-1/sqrt(H), 1/sqrt(H))`` for weights and biases (as torch); layer-norm gains 1, biases 0. With
        ``forget_bias`` (LSTM) the forget-gate biases are then set so that ``bias_ih_f + bias_hh_f = forget_bias``
        (``bias_ih_f = forget_bias``, ``bias_hh_f = 0``; Jozefowicz et al., 2015 use 1)."""
        bound = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0.0
        for pname, param in self.named_parameters():
            if pname.startswith("ln_"):
                nn.init.ones_(param) if pname.endswith("_weight") else nn.init.zeros_(param)
            else:
                nn.init.uniform_(param, -bound, bound)
        if self.forget_bias is not None and self.bias_ih is not None and self.bias_hh is not None:
            hid = self.hidden_size
            with torch.no_grad():
                self.bias_ih[hid : 2 * hid].fill_(self.forget_bias)
                self.bias_hh[hid : 2 * hid].zero_()

    def _zeros(self, batch_size: int | None, device: Any = None, dtype: torch.dtype | None = None,
               width: int | None = None) -> Tensor:  # fmt: skip
        width = self.output_size if width is None else width
        shape = (width,) if batch_size is None else (batch_size, width)
        return torch.zeros(shape, device=device or self.weight_hh.device, dtype=dtype or self.weight_hh.dtype)

    def init_state(
        self, batch_size: int | None = None, device: Any = None, dtype: torch.dtype | None = None
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Zero state ``(batch_size, H)`` (``(H,)`` when ``batch_size`` is None); ``(h, c)`` for the LSTM."""
        return self._zeros(batch_size, device, dtype)

    def __prepare_scriptable__(self) -> nn.Module:
        """What ``torch.jit.script`` compiles for this cell (see :mod:`seqforge.layers.scripted`)."""
        from seqforge.layers.scripted import scripted_cell  # the layers import the cells

        return scripted_cell(self)

    def weights(self) -> LayerWeights:
        """The parameters in torch's order (what the fused backends and ``cudnn`` consume)."""
        return LayerWeights(*(getattr(self, n, None) for n in (  # type: ignore[arg-type]
            "weight_ih", "weight_hh", "bias_ih", "bias_hh", "ln_ih_weight", "ln_ih_bias",
            "ln_hh_weight", "ln_hh_bias", "ln_cell_weight", "ln_cell_bias",
        )))  # fmt: skip

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        s += "" if self.bias else ", bias=False"
        return s + (f", proj_size={self.proj_size}" if self.proj_size else "")

    def _check_input(self, input: Tensor) -> tuple[Tensor, bool]:
        """Validate ``input`` and return it as ``(B, I)`` plus whether it was unbatched."""
        name = type(self).__name__
        if not isinstance(input, Tensor):
            raise TypeError(f"{name}: input must be a Tensor, got {type(input).__name__}")
        if input.dim() not in (1, 2):
            raise ValueError(f"{name}: Expected input to be 1D or 2D, got {input.dim()}D instead")
        if input.shape[-1] != self.input_size:
            raise ShapeError(f"{name}: input has {input.shape[-1]} features, expected input_size={self.input_size}")
        if input.dtype != self.weight_ih.dtype:
            raise TypeError(f"{name}: input dtype {input.dtype} does not match parameters {self.weight_ih.dtype}")
        if input.device != self.weight_ih.device:
            raise ValueError(f"{name}: input is on {input.device}, parameters on {self.weight_ih.device}")
        unbatched = input.dim() == 1
        return (input.unsqueeze(0) if unbatched else input), unbatched

    def _check_state(self, state: Tensor | None, batch: int, unbatched: bool, what: str,
                     width: int | None = None) -> Tensor:  # fmt: skip
        """Validate one state tensor (or build zeros) ``width`` (default ``output_size``) wide; return it as
        ``(B, width)``."""
        width = self.output_size if width is None else width
        if state is None:
            return self._zeros(batch, width=width)
        name = type(self).__name__
        expected = (width,) if unbatched else (batch, width)
        if not isinstance(state, Tensor):
            raise TypeError(f"{name}: {what} must be a Tensor, got {type(state).__name__}")
        if tuple(state.shape) != expected:
            raise ShapeError(f"{name}: {what} must have shape {expected}, got {tuple(state.shape)}")
        if state.dtype != self.weight_hh.dtype or state.device != self.weight_hh.device:
            raise TypeError(
                f"{name}: {what} is {state.dtype} on {state.device}, expected "
                f"{self.weight_hh.dtype} on {self.weight_hh.device}"
            )
        return state.unsqueeze(0) if unbatched else state

    def _gates(self, x: Tensor, h: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``gi = LN_ih(x W_ih^T) + b_ih`` and ``gh = LN_hh((h * mask) W_hh^T) + b_hh``."""
        gi = SF.project(x, self.weight_ih, self.bias_ih, *self._ln("ih"))
        gh = SF.project(h if mask is None else h * mask, self.weight_hh, self.bias_hh, *self._ln("hh"))
        return gi, gh

    def _ln(self, which: str) -> tuple[Tensor | None, Tensor | None]:
        if not self.layer_norm:
            return None, None
        return getattr(self, f"ln_{which}_weight"), getattr(self, f"ln_{which}_bias")


class RNNCell(BuiltinCell):
    r"""Elman RNN cell: :math:`h' = \tanh(W_{ih} x + b_{ih} + W_{hh} h + b_{hh})` (or ReLU).

    Args:
        input_size: features ``I`` of the input.
        hidden_size: features ``H`` of the hidden state.
        bias: learn ``bias_ih`` and ``bias_hh``.
        nonlinearity: ``"tanh"`` or ``"relu"``.

    Inputs: ``input (B, I)`` or ``(I,)``, ``hx (B, H)`` or ``(H,)`` (zeros if omitted).
    Outputs: ``h' (B, H)`` or ``(H,)``.

    Example:
        >>> cell = RNNCell(10, 20)
        >>> cell(torch.randn(3, 10)).shape
        torch.Size([3, 20])
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: str = "tanh",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **options: Any,
    ) -> None:
        if nonlinearity not in _NONLINEARITIES:
            raise ValueError(f"RNNCell: nonlinearity must be one of {_NONLINEARITIES}, got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        self.mode = "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU"
        super().__init__(input_size, hidden_size, bias, device, dtype, **options)

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        x, unbatched = self._check_input(input)
        h = self._check_state(hx, x.shape[0], unbatched, "hx")
        h_next = self.step(x, h)[0]
        return h_next.squeeze(0) if unbatched else h_next

    def step(self, x_t: Tensor, state: Tensor, recurrent_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Contract step: ``x_t (B, I)``, ``state = h (B, H)`` -> ``(h', h')``."""
        h = SF.rnn_pointwise(*self._gates(x_t, state, recurrent_mask), self.nonlinearity)
        return h, h

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s if self.nonlinearity == "tanh" else s + f", nonlinearity={self.nonlinearity}"


class LSTMCell(BuiltinCell):
    r"""LSTM cell with torch's gate order ``i, f, g, o``.

    .. math::
        i, f, g, o = \sigma, \sigma, \tanh, \sigma\;(W_{ih} x + b_{ih} + W_{hh} h + b_{hh}) \\
        c' = f \odot c + i \odot g, \qquad h' = o \odot \tanh(c')

    With ``proj_size=P > 0`` (as ``torch.nn.LSTM``'s projections, Sak et al., 2014) ``h' = W_{hr} (o \odot
    \tanh(c'))`` with ``weight_hr (P, H)``: ``h`` is ``P`` wide (``output_size``), ``weight_hh`` is ``(4H, P)``.

    Inputs: ``input (B, I)`` or ``(I,)``, ``hx = (h, c)``: ``h (B, P or H)``, ``c (B, H)`` (unbatched without
    ``B``; zeros if omitted).
    Outputs: ``(h', c')`` shaped as ``hx``.

    Example:
        >>> cell = LSTMCell(10, 20)
        >>> h, c = cell(torch.randn(3, 10))
        >>> h.shape, c.shape
        (torch.Size([3, 20]), torch.Size([3, 20]))
    """

    num_gates = 4
    mode = "LSTM"

    def init_state(
        self, batch_size: int | None = None, device: Any = None, dtype: torch.dtype | None = None
    ) -> tuple[Tensor, Tensor]:
        """Zero ``(h (batch_size, output_size), c (batch_size, H))`` (without ``batch_size`` when it is None)."""
        return self._zeros(batch_size, device, dtype), self._zeros(batch_size, device, dtype, self.hidden_size)

    def step(
        self, x_t: Tensor, state: tuple[Tensor, Tensor], recurrent_mask: Tensor | None = None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Contract step: ``x_t (B, I)``, ``state = (h (B, output_size), c (B, H))`` -> ``(h', (h', c'))``."""
        gi, gh = self._gates(x_t, state[0], recurrent_mask)
        ln_cell = (self.ln_cell_weight, self.ln_cell_bias) if self.normalize_cell else (None, None)
        h, c = SF.lstm_pointwise(gi, gh, state[1], *ln_cell)
        if self.proj_size:
            h = torch.matmul(h, self.weight_hr.t())
        return h, (h, c)

    def forward(self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        x, unbatched = self._check_input(input)
        if hx is not None and (not isinstance(hx, (tuple, list)) or len(hx) != 2):
            raise TypeError(f"{type(self).__name__}: hx must be a tuple (h, c), got {type(hx).__name__}")
        h0, c0 = (None, None) if hx is None else hx
        h = self._check_state(h0, x.shape[0], unbatched, "hx[0] (h)")
        c = self._check_state(c0, x.shape[0], unbatched, "hx[1] (c)", self.hidden_size)
        h_next, c_next = self.step(x, (h, c))[1]
        if unbatched:
            return h_next.squeeze(0), c_next.squeeze(0)
        return h_next, c_next


class GRUCell(BuiltinCell):
    r"""GRU cell with torch's gate order ``r, z, n``.

    .. math::
        r = \sigma(W_{ir} x + b_{ir} + W_{hr} h + b_{hr}), \quad z = \sigma(W_{iz} x + b_{iz} + W_{hz} h + b_{hz}) \\
        n = \tanh(W_{in} x + b_{in} + r \odot (W_{hn} h + b_{hn})), \quad h' = (1 - z) \odot n + z \odot h

    Inputs: ``input (B, I)`` or ``(I,)``, ``hx (B, H)`` or ``(H,)`` (zeros if omitted).
    Outputs: ``h' (B, H)`` or ``(H,)``.

    Example:
        >>> GRUCell(10, 20)(torch.randn(3, 10)).shape
        torch.Size([3, 20])
    """

    num_gates = 3
    mode = "GRU"

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        x, unbatched = self._check_input(input)
        h = self._check_state(hx, x.shape[0], unbatched, "hx")
        h_next = self.step(x, h)[0]
        return h_next.squeeze(0) if unbatched else h_next

    def step(self, x_t: Tensor, state: Tensor, recurrent_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Contract step: ``x_t (B, I)``, ``state = h (B, H)`` -> ``(h', h')``; the mask acts on ``W_hh h`` only."""
        h = SF.gru_pointwise(*self._gates(x_t, state, recurrent_mask), state)
        return h, h


class LayerNormLSTMCell(LSTMCell):
    r"""LSTM cell with layer normalization (Ba et al., 2016).

    .. math::
        i, f, g, o = \mathrm{LN}_{ih}(W_{ih} x) + b_{ih} + \mathrm{LN}_{hh}(W_{hh} h) + b_{hh} \\
        c' = \sigma(f) \odot c + \sigma(i) \odot \tanh(g), \qquad
        h' = \sigma(o) \odot \tanh(\mathrm{LN}_{cell}(c'))

    ``LN_ih`` and ``LN_hh`` normalize over all ``4H`` gate pre-activations (gain ``ln_*_weight``, shift
    ``ln_*_bias``); ``LN_cell`` normalizes the ``H`` cell features before the output ``tanh``; the state
    carried to the next step is the un-normalized ``c'``. Same call convention as :class:`LSTMCell`.
    """

    layer_norm = True
    normalize_cell = True


class LayerNormGRUCell(GRUCell):
    r"""GRU cell with layer normalization on both projections.

    .. math::
        g_i = \mathrm{LN}_{ih}(W_{ih} x) + b_{ih}, \qquad g_h = \mathrm{LN}_{hh}(W_{hh} h) + b_{hh} \\
        r, z = \sigma(g_{i,r} + g_{h,r}), \sigma(g_{i,z} + g_{h,z}), \quad
        n = \tanh(g_{i,n} + r \odot g_{h,n}), \quad h' = (1 - z) \odot n + z \odot h

    ``LN_ih`` and ``LN_hh`` normalize over all ``3H`` gate pre-activations. Same call convention as
    :class:`GRUCell`.
    """

    layer_norm = True


class LayerNormRNNCell(RNNCell):
    r"""Elman RNN cell with layer normalization on both projections:
    :math:`h' = \mathrm{act}(\mathrm{LN}_{ih}(W_{ih} x) + b_{ih} + \mathrm{LN}_{hh}(W_{hh} h) + b_{hh})`.
    Same call convention as :class:`RNNCell`."""

    layer_norm = True
