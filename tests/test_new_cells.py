"""IndRNN, minGRU and CfC against the cell contract and their papers.

Each cell is checked against its paper's equations re-written here in numpy (float64, 1e-12), by gradcheck,
against ``torch.jit.script`` of itself, and on a tiny training run. minGRU's parallel scan is held to the
sequential step loop (1e-10 in float64, forward and gradients) with padding and T = 500, where the
cumulative product of its gates underflows.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from torch.func import functional_call

from seqforge.cells.cfc import CfCCell
from seqforge.cells.indrnn import IndRNNCell
from seqforge.cells.mingru import MinGRUCell
from seqforge.layers.recurrent import Recurrent

F64 = torch.float64
TOL = 1e-12  # numpy formula vs cell, float64


def step_loop(cell: nn.Module, x: Tensor, h0: Tensor, valid: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Step ``cell`` over ``x (T, B, I)``; where ``valid`` is False the state is held. -> (h_all, h_final)."""
    h, outs = h0, []
    for t in range(x.shape[0]):
        h_t, new = cell(x[t], h)
        h = new if valid is None else torch.where(valid[t].unsqueeze(-1), new, h)
        outs.append(h_t if valid is None else h)
    return torch.stack(outs), h


def randomize_(cell: nn.Module, scale: float = 0.5) -> nn.Module:
    """Replace every parameter with N(0, scale^2) so zero-initialized biases are exercised too."""
    with torch.no_grad():
        for p in cell.parameters():
            p.normal_(0.0, scale)
    return cell


def params_np(cell: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy() for k, v in cell.named_parameters()}


def sigmoid(v: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-v))


# ---------------------------------------------------------------- the papers' equations, in numpy


def indrnn_paper(p: dict[str, np.ndarray], x: np.ndarray, h: np.ndarray, act: str, max_abs: float | None):
    """Li et al. 2018, eq. (2): h_t = sigma(W x_t + u * h_{t-1} + b), |u| clipped to max_abs."""
    u = p["weight_hh"] if max_abs is None else np.clip(p["weight_hh"], -max_abs, max_abs)
    hs = []
    for x_t in x:
        pre = x_t @ p["weight_ih"].T + u * h + p.get("bias", 0.0)
        h = np.maximum(pre, 0.0) if act == "relu" else np.tanh(pre)
        hs.append(h)
    return np.stack(hs)


def mingru_paper(p: dict[str, np.ndarray], x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Feng et al. 2024, minGRU: z = sigmoid(Linear_z x), h~ = Linear_h x, h = (1 - z) h + z h~."""
    H = h.shape[1]
    w_z, w_h = p["weight_ih"][:H], p["weight_ih"][H:]
    b_z, b_h = (p["bias"][:H], p["bias"][H:]) if "bias" in p else (0.0, 0.0)
    hs = []
    for x_t in x:
        z = sigmoid(x_t @ w_z.T + b_z)
        h_tilde = x_t @ w_h.T + b_h
        h = (1.0 - z) * h + z * h_tilde
        hs.append(h)
    return np.stack(hs)


ACTIVATIONS_NP: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "lecun_tanh": lambda v: 1.7159 * np.tanh(0.666 * v),
    "tanh": np.tanh,
    "relu": lambda v: np.maximum(v, 0.0),
    "silu": lambda v: v * sigmoid(v),
}


def cfc_paper(p: dict[str, np.ndarray], x: np.ndarray, h: np.ndarray, layers: int, act: str, time_gaps: bool):
    """Hasani et al. 2022, CfC: x(t) = sigmoid(-f t) * g + (1 - sigmoid(-f t)) * h, heads on one backbone."""
    hs = []
    for x_t in x:
        u, dt = (x_t[:, :-1], x_t[:, -1:]) if time_gaps else (x_t, 1.0)
        z = np.concatenate([u, h], axis=1)
        for i in range(layers):
            z = ACTIVATIONS_NP[act](z @ p[f"backbone.{2 * i}.weight"].T + p[f"backbone.{2 * i}.bias"])
        f = z @ p["f_head.weight"].T + p["f_head.bias"]
        g = np.tanh(z @ p["g_head.weight"].T + p["g_head.bias"])
        eta = np.tanh(z @ p["h_head.weight"].T + p["h_head.bias"])
        gate = sigmoid(-f * dt)
        h = gate * g + (1.0 - gate) * eta
        hs.append(h)
    return np.stack(hs)


@pytest.mark.parametrize(
    "options",
    [{}, {"nonlinearity": "tanh"}, {"recurrent_max_abs": 0.7}, {"nonlinearity": "tanh", "bias": False}],
)
def test_indrnn_matches_paper_equation(options: dict) -> None:
    torch.manual_seed(0)
    cell = randomize_(IndRNNCell(3, 6, dtype=F64, **options), scale=1.0)  # |u| up to ~2: the clip matters
    x, h0 = torch.randn(8, 4, 3, dtype=F64), torch.randn(4, 6, dtype=F64).abs()
    out, h_n = step_loop(cell, x, h0)
    ref = indrnn_paper(params_np(cell), x.numpy(), h0.numpy(), cell.nonlinearity, cell.recurrent_max_abs)
    np.testing.assert_allclose(out.detach().numpy(), ref, rtol=0, atol=TOL)
    assert torch.equal(out[-1], h_n)


@pytest.mark.parametrize("bias", [True, False])
def test_mingru_matches_paper_equation(bias: bool) -> None:
    torch.manual_seed(1)
    cell = randomize_(MinGRUCell(3, 6, bias=bias, dtype=F64))
    x, h0 = torch.randn(8, 4, 3, dtype=F64), torch.randn(4, 6, dtype=F64)
    ref = mingru_paper(params_np(cell), x.numpy(), h0.numpy())
    out, _ = step_loop(cell, x, h0)
    np.testing.assert_allclose(out.detach().numpy(), ref, rtol=0, atol=TOL)
    scanned, h_n = cell.forward_sequence(x, h0, None)
    np.testing.assert_allclose(scanned.detach().numpy(), ref, rtol=0, atol=TOL)
    np.testing.assert_allclose(h_n.detach().numpy(), ref[-1], rtol=0, atol=TOL)


@pytest.mark.parametrize(
    "layers, act, time_gaps",
    [(1, "lecun_tanh", False), (1, "lecun_tanh", True), (0, "tanh", True), (2, "relu", False), (2, "silu", True)],
)
def test_cfc_matches_paper_equation(layers: int, act: str, time_gaps: bool) -> None:
    torch.manual_seed(2)
    cell = randomize_(
        CfCCell(4, 5, backbone_units=7, backbone_layers=layers, activation=act, time_gaps=time_gaps, dtype=F64)
    )
    x, h0 = torch.randn(6, 3, 4, dtype=F64), torch.randn(3, 5, dtype=F64)
    if time_gaps:
        x[..., -1] = torch.rand(6, 3, dtype=F64) * 3.0  # elapsed times in [0, 3)
        x[2, 0, -1] = 0.0
    out, _ = step_loop(cell, x, h0)
    ref = cfc_paper(params_np(cell), x.numpy(), h0.numpy(), layers, act, time_gaps)
    np.testing.assert_allclose(out.detach().numpy(), ref, rtol=0, atol=TOL)


def test_cfc_unit_time_gaps_equal_constant_step() -> None:
    """A column of ones as Δt is the Δt = 1 cell with one feature fewer; other gaps change the output."""
    torch.manual_seed(3)
    plain = randomize_(CfCCell(3, 5, backbone_units=8, dtype=F64))
    timed = CfCCell(4, 5, backbone_units=8, time_gaps=True, dtype=F64)
    timed.load_state_dict(plain.state_dict())
    x, h0 = torch.randn(5, 2, 3, dtype=F64), torch.randn(2, 5, dtype=F64)
    ones = torch.ones(5, 2, 1, dtype=F64)
    torch.testing.assert_close(
        step_loop(timed, torch.cat([x, ones], -1), h0), step_loop(plain, x, h0), rtol=0, atol=TOL
    )
    halves = step_loop(timed, torch.cat([x, 0.5 * ones], -1), h0)[0]
    assert (halves - step_loop(plain, x, h0)[0]).abs().max() > 1e-3


# ---------------------------------------------------------------- contract, gradcheck, TorchScript

CELLS: dict[str, Callable[..., nn.Module]] = {
    "indrnn_relu": lambda **kw: IndRNNCell(3, 4, recurrent_max_abs=5.0, **kw),
    "indrnn_tanh": lambda **kw: IndRNNCell(3, 4, nonlinearity="tanh", **kw),
    "mingru": lambda **kw: MinGRUCell(3, 4, **kw),
    "cfc": lambda **kw: CfCCell(3, 4, backbone_units=5, **kw),
    "cfc_time_gaps": lambda **kw: CfCCell(3, 4, backbone_units=5, backbone_layers=2, time_gaps=True, **kw),
}


def _inputs(batch: int = 2) -> tuple[Tensor, Tensor]:
    """``x_t (batch, 3)`` non-negative (CfC's time-gap column is an elapsed time) and ``state (batch, 4)``."""
    torch.manual_seed(4)
    return torch.randn(batch, 3, dtype=F64).abs(), torch.randn(batch, 4, dtype=F64)


@pytest.mark.parametrize("name", list(CELLS))
def test_contract_shapes_and_init_state(name: str) -> None:
    cell = CELLS[name](dtype=F64)
    assert (cell.input_size, cell.hidden_size) == (3, 4)
    zero = cell.init_state(5)
    assert zero.shape == (5, 4) and zero.dtype == F64 and not zero.any()
    assert cell.init_state(2, dtype=torch.float32).dtype == torch.float32
    assert cell.init_state(2, device=torch.device("meta")).device.type == "meta"
    x, h = _inputs(5)
    h_t, new_state = cell(x, zero)
    assert h_t.shape == (5, 4) and new_state.shape == zero.shape and new_state.dtype == zero.dtype
    assert torch.jit.script(cell).init_state(3).shape == (3, 4)


@pytest.mark.parametrize("name", list(CELLS))
def test_gradcheck(name: str) -> None:
    torch.manual_seed(5)
    cell = randomize_(CELLS[name](dtype=F64))
    names = [k for k, _ in cell.named_parameters()]

    def step(x: Tensor, h: Tensor, *params: Tensor) -> Tensor:
        return functional_call(cell, dict(zip(names, params)), (x, h))[1]

    x, h = _inputs()
    inputs = (x, h, *(p.detach().clone() for p in cell.parameters()))
    assert torch.autograd.gradcheck(step, tuple(t.requires_grad_() for t in inputs))


@pytest.mark.parametrize("name", list(CELLS))
def test_torchscript_parity(name: str) -> None:
    torch.manual_seed(6)
    cell = randomize_(CELLS[name](dtype=F64))
    scripted = torch.jit.script(cell)
    x = torch.randn(5, 2, 3, dtype=F64).abs()
    h0 = torch.randn(2, 4, dtype=F64)
    results = []
    for module in (cell, scripted):
        out, h_n = step_loop(module, x, h0)
        loss = (out * torch.linspace(-1, 1, 4, dtype=F64)).sum() + h_n.square().sum()
        results.append((out, h_n, *torch.autograd.grad(loss, list(module.parameters()))))
    torch.testing.assert_close(results[1], results[0], rtol=0, atol=1e-13)


@pytest.mark.parametrize("name", list(CELLS))
def test_step_shape_errors(name: str) -> None:
    cell = CELLS[name]()
    cell_name = type(cell).__name__
    for module in (cell, torch.jit.script(cell)):
        # eager raises ValueError; TorchScript re-raises it as torch.jit.Error with the same message
        with pytest.raises(Exception, match=rf"{cell_name}: x_t must have shape \(B, input_size=3\), got \[2, 5\]"):
            module(torch.randn(2, 5), cell.init_state(2))
        state_message = rf"{cell_name}: state must have shape \(B=2, hidden_size=4\), got \[3, 4\]"
        with pytest.raises(Exception, match=state_message):
            module(torch.randn(2, 3), cell.init_state(3))


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: IndRNNCell(0, 4), r"IndRNNCell: input_size must be a positive int, got 0"),
        (lambda: IndRNNCell(3, 2.5), r"IndRNNCell: hidden_size must be a positive int, got 2.5"),
        (
            lambda: IndRNNCell(3, 4, nonlinearity="sigmoid"),
            r"IndRNNCell: nonlinearity must be one of \('relu', 'tanh'\), got 'sigmoid'",
        ),
        (
            lambda: IndRNNCell(3, 4, recurrent_max_abs=0.0),
            r"IndRNNCell: recurrent_max_abs must be a positive finite number or None, got 0.0",
        ),
        (lambda: IndRNNCell(3, 4, recurrent_max_abs=float("inf")), r"recurrent_max_abs .* got inf"),
        (
            lambda: IndRNNCell(3, 4, recurrent_init=(0.5, 0.2)),
            r"IndRNNCell: recurrent_init must be None or two finite numbers \(low, high\) with low <= high, "
            r"got \(0.5, 0.2\)",
        ),
        (lambda: IndRNNCell(3, 4, recurrent_init=[0.1]), r"recurrent_init must be None or two .* got \[0.1\]"),
        (lambda: IndRNNCell(3, 4, recurrent_init="01"), r"recurrent_init must be None or two .* got '01'"),
        (lambda: IndRNNCell(3, 4, recurrent_init=(0, float("nan"))), r"recurrent_init must be None .* got \(0, nan\)"),
        (
            lambda: IndRNNCell(3, 4, recurrent_max_abs=1.0, recurrent_init=(0.9, 1.1)),
            r"IndRNNCell: recurrent_init must lie inside \[-recurrent_max_abs, recurrent_max_abs\] = \[-1.0, 1.0\] "
            r"\(the clamp would change it\), got \(0.9, 1.1\)",
        ),
        (lambda: MinGRUCell(True, 4), r"MinGRUCell: input_size must be a positive int, got True"),
        (lambda: MinGRUCell(3, -1), r"MinGRUCell: hidden_size must be a positive int, got -1"),
        (lambda: CfCCell(3, 0), r"CfCCell: hidden_size must be a positive int, got 0"),
        (lambda: CfCCell(3, 4, backbone_units=0), r"CfCCell: backbone_units must be a positive int, got 0"),
        (lambda: CfCCell(3, 4, backbone_layers=-1), r"CfCCell: backbone_layers must be a non-negative int, got -1"),
        (lambda: CfCCell(3, 4, activation="swish"), r"CfCCell: activation must be one of \('lecun_tanh',.*got 'swish'"),
        (lambda: CfCCell(3, 4, time_gaps=1), r"CfCCell: time_gaps must be a bool, got 1"),
    ],
)
def test_bad_arguments(build: Callable[[], nn.Module], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


def test_indrnn_clip_and_init() -> None:
    """u starts in [0, min(1, m)], W ~ N(0, 0.001^2); a u beyond m acts as m and gets no gradient."""
    torch.manual_seed(7)
    cell = IndRNNCell(50, 400, recurrent_max_abs=0.5, dtype=F64)
    assert 0.0 <= cell.weight_hh.min() and cell.weight_hh.max() <= 0.5
    assert abs(cell.weight_ih.std().item() - 0.001) < 1e-4 and not cell.bias.any()
    assert IndRNNCell(3, 400).weight_hh.max() > 0.9
    small = IndRNNCell(1, 2, recurrent_max_abs=0.5, dtype=F64)
    with torch.no_grad():
        small.weight_ih.zero_()
        small.weight_hh.copy_(torch.tensor([3.0, 0.25]))
    h, _ = small(torch.zeros(1, 1, dtype=F64), torch.ones(1, 2, dtype=F64))
    torch.testing.assert_close(h, torch.tensor([[0.5, 0.25]], dtype=F64))
    h.sum().backward()
    assert small.weight_hh.grad.tolist() == [0.0, 1.0]


def test_indrnn_recurrent_init_remembers_the_sequence() -> None:
    """recurrent_init=(2^(-1/T), 2^(1/T)) with m=2^(1/T) (the authors' adding-problem last layer): u fills that
    range, and with W = 0, b = 0 each unit's state after T steps is u^T h_0 (numpy, float64), between h_0/2
    and 2 h_0: the cell neither forgets nor explodes over the sequence."""
    T = 200
    low, high = 2 ** (-1 / T), 2 ** (1 / T)
    torch.manual_seed(8)
    cell = IndRNNCell(2, 4000, recurrent_max_abs=high, recurrent_init=[low, high], dtype=F64)  # a list, as Hydra
    u = cell.weight_hh.detach()
    assert cell.recurrent_init == (low, high) and low <= u.min() and u.max() <= high
    assert u.min() - low < 1e-5 and high - u.max() < 1e-5  # 4000 draws over a width of 0.007 reach both ends
    assert "recurrent_init=(" in repr(cell)
    with torch.no_grad():
        cell.weight_ih.zero_()
    h0 = torch.rand(3, 4000, dtype=F64) + 0.5
    _, h_T = step_loop(cell, torch.randn(T, 3, 2, dtype=F64), h0)
    ref = u.numpy() ** T * h0.numpy()
    np.testing.assert_allclose(h_T.detach().numpy(), ref, rtol=1e-12, atol=0)
    ratio = (h_T / h0).detach()
    assert 0.5 - 1e-12 <= ratio.min() and ratio.max() <= 2.0 + 1e-12
    assert ratio.min() < 0.51 and ratio.max() > 1.99  # the ends of the range are reached
    assert IndRNNCell(2, 400, recurrent_init=(-0.5, -0.25)).weight_hh.max() <= -0.25  # no bound: any range


# ---------------------------------------------------------------- minGRU: parallel scan == step loop


def _mingru_scan_vs_loop(cell: MinGRUCell, x: Tensor, h0: Tensor, valid: Tensor | None) -> None:
    params = list(cell.parameters())
    results = []
    for run in (lambda: cell.forward_sequence(x, h0, valid), lambda: step_loop(cell, x, h0, valid)):
        out, h_n = run()
        if valid is not None:  # h_all at padded steps may be anything: compare the valid ones
            out = out * valid.unsqueeze(-1)
        weights = torch.linspace(-1, 1, out.numel(), dtype=F64).view_as(out)
        loss = (out * weights).sum() + (h_n * h_n.detach().sign()).sum()
        results.append((out, h_n, *torch.autograd.grad(loss, [x, h0, *params])))
    torch.testing.assert_close(results[0], results[1], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("steps", [1, 2, 3, 5, 8, 13])
def test_mingru_scan_equals_loop(steps: int) -> None:
    torch.manual_seed(steps)
    cell = randomize_(MinGRUCell(3, 4, dtype=F64))
    x = torch.randn(steps, 3, 3, dtype=F64, requires_grad=True)
    h0 = torch.randn(3, 4, dtype=F64, requires_grad=True)
    _mingru_scan_vs_loop(cell, x, h0, None)
    lengths = torch.tensor([steps, max(1, steps // 2), 1])
    valid = torch.arange(steps).unsqueeze(1) < lengths  # (T, B) prefix mask
    _mingru_scan_vs_loop(cell, x, h0, valid)


def test_mingru_scan_long_sequence_where_cumprod_underflows() -> None:
    """T = 500 with gates z ~ 0.95: prod(1 - z) underflows float64, the scan still equals the loop."""
    torch.manual_seed(8)
    cell = randomize_(MinGRUCell(3, 4, dtype=F64), scale=0.3)
    with torch.no_grad():
        cell.bias[:4] = 3.0  # z = sigmoid(~3), a = 1 - z ~ 0.05
    x = torch.randn(500, 3, 3, dtype=F64, requires_grad=True)
    h0 = torch.randn(3, 4, dtype=F64, requires_grad=True)
    a = 1.0 - torch.sigmoid(x.detach() @ cell.weight_ih[:4].detach().T + cell.bias[:4].detach())
    assert torch.cumprod(a, dim=0)[-1].max() == 0.0  # the naive closed form divides by this
    lengths = torch.tensor([500, 317, 1])
    valid = torch.arange(500).unsqueeze(1) < lengths
    _mingru_scan_vs_loop(cell, x, h0, None)
    _mingru_scan_vs_loop(cell, x, h0, valid)


def test_mingru_padding_holds_state_and_scripts() -> None:
    """Final state = the state after each sequence's last valid step; scripted forward_sequence agrees."""
    torch.manual_seed(9)
    cell = randomize_(MinGRUCell(3, 4, dtype=F64))
    x, h0 = torch.randn(9, 3, 3, dtype=F64), torch.randn(3, 4, dtype=F64)
    lengths = [9, 4, 1]
    valid = torch.arange(9).unsqueeze(1) < torch.tensor(lengths)
    h_all, h_n = cell.forward_sequence(x, h0, valid)
    for b, n in enumerate(lengths):
        alone = cell.forward_sequence(x[:n, b : b + 1], h0[b : b + 1], None)[1]
        torch.testing.assert_close(h_n[b : b + 1], alone, rtol=0, atol=1e-13)
        # padded steps repeat the held state (up to the scan's association order)
        torch.testing.assert_close(h_all[n:, b], h_n[b].expand(9 - n, 4), rtol=0, atol=1e-13)
    scripted = torch.jit.script(cell).forward_sequence(x, h0, valid)
    torch.testing.assert_close(scripted, (h_all, h_n), rtol=0, atol=1e-13)
    empty, held = cell.forward_sequence(x[:0], h0, None)
    assert empty.shape == (0, 3, 4) and torch.equal(held, h0)


def test_mingru_forward_sequence_errors() -> None:
    cell = MinGRUCell(3, 4)
    h0 = cell.init_state(2)
    with pytest.raises(ValueError, match=r"MinGRUCell: x must have shape \(T, B, input_size=3\), got \[5, 2, 4\]"):
        cell.forward_sequence(torch.randn(5, 2, 4), h0, None)
    with pytest.raises(ValueError, match=r"MinGRUCell: state must have shape \(B=2, hidden_size=4\), got \[3, 4\]"):
        cell.forward_sequence(torch.randn(5, 2, 3), cell.init_state(3), None)
    with pytest.raises(ValueError, match=r"MinGRUCell: valid must be a bool tensor of shape \(T, B\)=\[5, 2\]"):
        cell.forward_sequence(torch.randn(5, 2, 3), h0, torch.ones(5, 2))


# ---------------------------------------------------------------- training sanity (seconds)


def _mean_batch(generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Average 10 N(0, 1) inputs: x (10, 64, 1), y (64,); predicting 0 (the best constant) costs Var(y) = 0.1."""
    values = torch.randn(10, 64, generator=generator)
    return values.unsqueeze(-1), values.mean(0)


def _train(cell: nn.Module, run: Callable[[nn.Module, Tensor], Tensor], batch_fn, lr: float) -> float:
    """50 Adam steps of ``cell`` and a linear readout of its final state; the mean loss of the last 5."""
    torch.manual_seed(10)
    head = nn.Linear(cell.hidden_size, 1)
    optimizer = torch.optim.Adam([*cell.parameters(), *head.parameters()], lr=lr)
    generator = torch.Generator().manual_seed(11)
    losses = []
    for _ in range(50):
        x, y = batch_fn(generator)
        loss = nn.functional.mse_loss(head(run(cell, x)).squeeze(-1), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return sum(losses[-5:]) / 5


def _final_state(cell: nn.Module, x: Tensor) -> Tensor:
    return step_loop(cell, x, cell.init_state(x.shape[1]))[1]


def test_indrnn_trains() -> None:
    torch.manual_seed(12)
    assert _train(IndRNNCell(1, 32), _final_state, _mean_batch, lr=1e-2) < 0.1 * 0.1  # measured 0.0017


def test_mingru_trains_through_its_scan() -> None:
    torch.manual_seed(13)

    def scan(cell: nn.Module, x: Tensor) -> Tensor:
        return cell.forward_sequence(x, cell.init_state(x.shape[1]), None)[1]

    assert _train(MinGRUCell(1, 32), scan, _mean_batch, lr=3e-2) < 0.4 * 0.1  # measured 0.017


def test_cfc_trains_with_time_gaps() -> None:
    """Integrate an irregularly sampled signal, y = sum_t Δt_t v_t / 10, with Δt in the last feature."""
    torch.manual_seed(14)

    def batch(generator: torch.Generator) -> tuple[Tensor, Tensor]:
        values = torch.randn(10, 64, generator=generator)
        gaps = torch.rand(10, 64, generator=generator) * 2.0
        return torch.stack([values, gaps], dim=-1), (values * gaps).sum(0) / 10

    variance = 10 * (4 / 3) / 100  # Var(y): E[Δt^2] = 4/3 per step
    cell = CfCCell(2, 16, backbone_units=32, time_gaps=True)
    assert _train(cell, _final_state, batch, lr=1e-2) < 0.5 * variance  # measured 0.23 * variance


# ------------------------------------------------------------------ CfC time gaps through stacked, reversed layers
def _cfc_reference(layer: Recurrent, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    """Per-sequence loop over ``layer.cells``: every layer reads ``Δt`` (the last feature of ``x``), a reverse
    direction at step ``t`` the gap to the step it comes from (``Δt_{t+1}``; ``Δt_0`` at its first step)."""
    T, B, _ = x.shape
    D, H = layer.num_directions, layer.hidden_size
    out = x.new_zeros(T, B, D * H)
    finals = []
    for b in range(B):
        L = int(lengths[b])
        gaps = x[:L, b, -1:]  # (L, 1)
        inp = x[:L, b, :-1]  # (L, I - 1) features without Δt
        h_n = []
        for layer_index in range(layer.num_layers):
            outs = []
            for direction in range(D):
                cell = layer.cells[layer_index * D + direction]
                h = x.new_zeros(1, H)
                steps = range(L) if direction == 0 else range(L - 1, -1, -1)
                hs = [None] * L
                for t in steps:
                    gap = gaps[t] if direction == 0 else gaps[(t + 1) % L]
                    h, _ = cell(torch.cat([inp[t], gap]).unsqueeze(0), h)
                    hs[t] = h[0]
                outs.append(torch.stack(hs))
                h_n.append(h[0])
            inp = torch.cat(outs, dim=1)  # (L, D*H), the next layer's input before its Δt
        out[:L, b] = inp
        finals.append(torch.stack(h_n))
    return out, torch.stack(finals, dim=1)  # (T, B, D*H), (L*D, B, H)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_cfc_time_gaps_reach_every_layer_and_the_reverse_direction(bidirectional: bool) -> None:
    torch.manual_seed(0)
    cell = functools.partial(CfCCell, backbone_units=6, time_gaps=True, dtype=F64)
    layer = randomize_(Recurrent(cell, 3 + 1, 5, num_layers=2, bidirectional=bidirectional, backend="eager"))
    D = layer.num_directions
    assert [c.input_size for c in layer.cells] == [4] * D + [5 * D + 1] * D  # deeper cells: outputs, then Δt
    lengths = torch.tensor([6, 3, 1, 5])
    x = torch.cat([torch.randn(6, 4, 3, dtype=F64), torch.rand(6, 4, 1, dtype=F64) * 2], dim=2).requires_grad_()
    out, h_n = layer(x, lengths=lengths)
    ref_out, ref_h = _cfc_reference(layer, x, lengths)
    torch.testing.assert_close(out, ref_out, atol=1e-12, rtol=0)
    torch.testing.assert_close(h_n, ref_h, atol=1e-12, rtol=0)
    weights = torch.randn_like(out)
    params = [x, *layer.parameters()]
    grads = torch.autograd.grad((out * weights).sum() + h_n.sum(), params)
    ref_grads = torch.autograd.grad((ref_out * weights).sum() + ref_h.sum(), params)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=0)
    if not bidirectional:  # a decoder's steps hand Δt to the deeper layer too
        state, steps = None, []
        for t in range(x.shape[0]):
            h, state = layer.step(x[t], state)
            steps.append(h)
        torch.testing.assert_close(torch.stack(steps), layer(x)[0], atol=1e-12, rtol=0)
