r"""minGRU: a GRU whose gates see only the input, so a whole sequence is one parallel scan.

Feng, Tung, Ahmed, Bengio and Hajimirsadeghi, 2024, "Were RNNs All We Needed?" (arXiv:2410.01201).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqforge.cells.indrnn import check_sizes, check_state, check_step, zero_state


def linear_scan(a: Tensor, b: Tensor, h0: Tensor) -> Tensor:
    """All states of ``h_t = a_t * h_{t-1} + b_t`` (``h_{-1} = h0``) in ``ceil(log2 T)`` parallel steps.

    A Hillis-Steele scan of the associative composition of affine maps,
    ``(a1, b1) then (a2, b2) = (a2 * a1, a2 * b1 + b2)``: after the round with offset ``k`` every position
    holds the composition of the last ``2k`` maps. It only multiplies and adds (no division or log), so a
    product of gates that underflows to zero is exactly the limit the sequential loop reaches too, and any
    sign of ``b`` and ``h0`` is fine.

    Shapes: ``a, b (T, B, H)``, ``h0 (B, H)`` -> ``(T, B, H)``; ``T >= 1``.
    """
    b = torch.cat([(a[0] * h0 + b[0]).unsqueeze(0), b[1:]])  # fold h0 into the first step
    steps = a.shape[0]
    offset = 1
    while offset < steps:
        b = torch.cat([b[:offset], a[offset:] * b[:-offset] + b[offset:]])
        if 2 * offset < steps:  # the last round needs no further products of a
            a = torch.cat([a[:offset], a[offset:] * a[:-offset]])
        offset *= 2
    return b


class MinGRUCell(nn.Module):
    r"""minGRU cell (the paper's minGRU, in linear space).

    .. math::
        z_t = \sigma(W_z x_t + b_z), \qquad \tilde h_t = W_h x_t + b_h, \qquad
        h_t = (1 - z_t) \odot h_{t-1} + z_t \odot \tilde h_t

    ``weight_ih (2H, I)`` stacks ``[W_z; W_h]`` and ``bias (2H,)`` stacks ``[b_z; b_h]``, both initialized
    ``U(-1/sqrt(I), 1/sqrt(I))`` as ``torch.nn.Linear`` (the paper's ``Linear_dh``). Neither gate reads
    ``h_{t-1}``, so ``h_t = a_t \odot h_{t-1} + b_t`` with ``a_t = 1 - z_t`` and ``b_t = z_t \odot \tilde h_t``
    is a linear recurrence: :meth:`forward_sequence` computes every step at once with
    :func:`linear_scan` and equals stepping :meth:`forward` (tested to 1e-10 in float64 at T = 500).

    This is the paper's plain formulation, not its log-space variant (which passes ``\tilde h`` and ``h_0``
    through ``g(x) = x + 0.5`` for ``x >= 0``, ``sigmoid(x)`` otherwise, to keep them positive for a
    log-space cumulative sum): the scan here works on signed values directly, so ``h`` may be negative and
    the step and the scan compute the same function.

    Args:
        input_size: features ``I`` of ``x_t``.
        hidden_size: units ``H``.
        bias: learn ``b_z`` and ``b_h``.

    Shapes: ``forward(x_t (B, I), state (B, H)) -> (h_t (B, H), new_state (B, H))`` (the same tensor);
    ``forward_sequence(x (T, B, I), state (B, H), valid (T, B) bool or None) -> (h_all (T, B, H),
    final_state (B, H))``, where steps with ``valid`` False leave the state unchanged.

    Example:
        >>> cell = MinGRUCell(8, 32)
        >>> x = torch.randn(100, 4, 8)                        # (T, B, I)
        >>> h_all, h_T = cell.forward_sequence(x, cell.init_state(4), None)
        >>> h_all.shape, h_T.shape
        (torch.Size([100, 4, 32]), torch.Size([4, 32]))
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        check_sizes("MinGRUCell", input_size, hidden_size)
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.weight_ih = nn.Parameter(torch.empty(2 * hidden_size, input_size, **factory))
        if bias:
            self.bias = nn.Parameter(torch.empty(2 * hidden_size, **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``U(-1/sqrt(I), 1/sqrt(I))`` for ``weight_ih`` and ``bias``, as ``torch.nn.Linear``."""
        bound = 1.0 / math.sqrt(self.input_size)
        nn.init.uniform_(self.weight_ih, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    @torch.jit.export
    def init_state(
        self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> Tensor:
        """Zero state ``(batch_size, H)``, on the parameters' device/dtype unless given."""
        return zero_state(batch_size, self.hidden_size, self.weight_ih, device, dtype)

    def _coefficients(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``a = 1 - z`` and ``b = z * h~`` for inputs ``(*, I)``, each ``(*, H)``."""
        k, h_tilde = F.linear(x, self.weight_ih, self.bias).chunk(2, dim=-1)
        z = torch.sigmoid(k)
        return 1.0 - z, z * h_tilde

    def forward(self, x_t: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        check_step("MinGRUCell", x_t, state, self.input_size, self.hidden_size)
        a, b = self._coefficients(x_t)
        h = a * state + b
        return h, h

    @torch.jit.export
    def forward_sequence(self, x: Tensor, state: Tensor, valid: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Every step of ``x (T, B, I)`` from ``state (B, H)`` by one parallel scan.

        ``valid (T, B)`` bool marks real steps; elsewhere ``a = 1, b = 0``, so the state passes through
        unchanged (and ``h_all`` there repeats it). Returns ``(h_all (T, B, H), final_state (B, H))``.
        """
        if x.dim() != 3 or x.shape[2] != self.input_size:
            raise ValueError(f"MinGRUCell: x must have shape (T, B, input_size={self.input_size}), got {list(x.shape)}")
        check_state("MinGRUCell", state, x.shape[1], self.hidden_size)
        if x.shape[0] == 0:
            return x.new_empty(0, state.shape[0], self.hidden_size), state
        a, b = self._coefficients(x)  # (T, B, H) each
        if valid is not None:
            if valid.dtype != torch.bool or list(valid.shape) != list(x.shape[:2]):
                raise ValueError(
                    f"MinGRUCell: valid must be a bool tensor of shape (T, B)={list(x.shape[:2])}, "
                    f"got {valid.dtype} {list(valid.shape)}"
                )
            keep = valid.unsqueeze(-1)
            a = torch.where(keep, a, torch.ones_like(a))
            b = torch.where(keep, b, torch.zeros_like(b))
        h_all = linear_scan(a, b, state)
        return h_all, h_all[-1]

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        return s if self.bias is not None else s + ", bias=False"
