"""IndRNNCell's optional input split (``project_input`` + ``step_projected``): the contract's check passes, and
``backend="script"`` (one ``W x + b`` for all steps, then the recurrent step) equals the plain per-step path
(``backend="eager"``: ``forward`` at every step) in float64, outputs, final states and every gradient.

Tolerance: ``TOL = 1e-12`` absolute (the two paths compute the same expressions in another order).
"""

from __future__ import annotations

import functools

import pytest
import torch
from torch import Tensor

import seqforge
from seqforge.cells.base import check_cell, projects_input
from seqforge.cells.indrnn import IndRNNCell

TOL = 1e-12
F64 = torch.float64
OPTIONS = {"relu_clipped": {"recurrent_max_abs": 0.8}, "tanh": {"nonlinearity": "tanh"},
           "no_bias": {"bias": False}}  # fmt: skip


def layer(backend: str, options: dict) -> seqforge.Recurrent:
    """2 layers, bidirectional, parameters drawn from U(-1, 1) (|u| beyond the clip): the same for any backend."""
    torch.manual_seed(0)
    rnn = seqforge.Recurrent(functools.partial(IndRNNCell, **options), 3, 5, num_layers=2, bidirectional=True,
                             batch_first=True, backend=backend).double()  # fmt: skip
    with torch.no_grad():
        for p in rnn.parameters():
            p.uniform_(-1.0, 1.0)
    return rnn


def results(rnn: seqforge.Recurrent) -> list[Tensor]:
    """``[output, h_n, d/dx, d/dh0, *d/dparams]`` on ragged lengths, for a loss touching every output."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 7, 3, generator=g, dtype=F64).requires_grad_()
    h0 = torch.randn(4, 4, 5, generator=g, dtype=F64).permute(1, 0, 2).contiguous().requires_grad_()
    out, h_n = rnn(x, h0, lengths=torch.tensor([7, 2, 5, 1]))
    weight = torch.linspace(-1, 1, out.numel(), dtype=F64).view_as(out)
    loss = (out * weight).sum() + (3 * h_n).sum()
    return [out, h_n, *torch.autograd.grad(loss, [x, h0, *rnn.parameters()])]


@pytest.mark.parametrize("name", list(OPTIONS))
def test_indrnn_split_passes_the_contract_check(name: str) -> None:
    cell = IndRNNCell(3, 5, dtype=F64, **OPTIONS[name])
    assert projects_input(cell)
    assert check_cell(cell, 3, F64, torch.device("cpu")) is True  # a lone-tensor state


@pytest.mark.parametrize("name", list(OPTIONS))
def test_indrnn_script_split_equals_the_plain_step_path(name: str) -> None:
    scripted, plain = layer("script", OPTIONS[name]), layer("eager", OPTIONS[name])
    got, expected = results(scripted), results(plain)
    assert len(got) == len(expected) == 4 + 2 * 2 * (3 if name != "no_bias" else 2)
    for a, b in zip(got, expected):
        assert a.shape == b.shape and (a - b).abs().max().item() <= TOL
    assert expected[0][1, 2:].abs().max() == 0  # padding stays zero
    for runner in scripted._loops["script"].runners:  # the scripted loop runs the split
        assert "project_input" in runner.step_inputs.code and "step_projected" in runner.code


def test_project_input_names_a_wrong_shape() -> None:
    with pytest.raises(ValueError, match=r"IndRNNCell: x must have shape \(T, B, input_size=3\), got \[2, 3\]"):
        IndRNNCell(3, 5).project_input(torch.randn(2, 3))
