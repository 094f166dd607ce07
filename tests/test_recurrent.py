"""seqforge.Recurrent over cells written outside the package: the contract, every backend against a
per-sequence Python loop in float64 (outputs, final states, every gradient), bad cells, cell specs,
padding that never leaks, second derivatives.

Tolerance: ``TOL = 1e-10`` absolute in float64 (the paths compute the same expressions; observed ~1e-15).
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from helpers.cells import IndRNNCell, PeepholeLSTMCell, SplitIndRNNCell, SplitPeepholeLSTMCell
from omegaconf import OmegaConf
from torch import Tensor, nn

import seqforge
from seqforge.cells import CellContractError

TOL = 1e-10  # compared with <=
USER_CELLS = [PeepholeLSTMCell, IndRNNCell]
SPLIT_CELLS = [SplitPeepholeLSTMCell, SplitIndRNNCell]  # the contract's optional input split


def _parts(state: Tensor | tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    return (state,) if isinstance(state, Tensor) else tuple(state)


def _layer(cell: type, backend: str, seed: int = 0, **kwargs) -> seqforge.Recurrent:
    torch.manual_seed(seed)
    opts = {"num_layers": 2, "bidirectional": True, "batch_first": True, **kwargs}
    return seqforge.Recurrent(cell, 3, 4, backend=backend, **opts).double()


def _inputs(layer: seqforge.Recurrent, batch: int = 4, steps: int = 6) -> tuple[Tensor, Tensor, tuple[Tensor, ...]]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, steps, 3, generator=g, dtype=torch.float64)
    lengths = torch.tensor([steps, 3, 1, steps - 1][:batch])
    zeros = _parts(layer.init_state(batch, dtype=torch.float64))
    hx = tuple(torch.randn(z.shape, generator=g, dtype=torch.float64) for z in zeros)
    return x, lengths, hx


def _per_sequence_loop(layer: seqforge.Recurrent, x: Tensor, lengths: Tensor, hx: tuple[Tensor, ...]
                       ) -> tuple[Tensor, tuple[Tensor, ...]]:  # fmt: skip
    """Each sequence alone, each layer and direction a plain Python loop over the layer's own cells."""
    D, tensor_state = layer.num_directions, layer.state_is_tensor
    outputs, finals = [], [[[None] * x.shape[0] for _ in range(len(layer.cells))] for _ in hx]
    for b, n in enumerate(lengths.tolist()):
        seq = x[b, :n]  # (n, I)
        for lay in range(layer.num_layers):
            directions = []
            for d in range(D):
                k = lay * D + d
                state = tuple(s[k, b : b + 1] for s in hx)
                steps = seq if d == 0 else seq.flip(0)
                hs = []
                for t in range(n):
                    h, new = layer.cells[k](steps[t : t + 1], state[0] if tensor_state else state)
                    state = _parts(new)
                    hs.append(h)
                out = torch.cat(hs)  # (n, H)
                directions.append(out if d == 0 else out.flip(0))
                for j, s in enumerate(state):
                    finals[j][k][b] = s[0]
            seq = torch.cat(directions, -1)
        outputs.append(torch.cat([seq, seq.new_zeros(x.shape[1] - n, seq.shape[1])]))
    final = tuple(torch.stack([torch.stack(per_k) for per_k in f]) for f in finals)
    return torch.stack(outputs), final


def _results(layer: seqforge.Recurrent, x: Tensor, lengths: Tensor, hx: tuple[Tensor, ...], reference: bool = False
             ) -> list[Tensor]:  # fmt: skip
    """``[output, *finals, d/dx, *d/dhx, *d/dparams]`` for a loss touching every output."""
    x = x.clone().requires_grad_()
    hx = tuple(h.clone().requires_grad_() for h in hx)
    if reference:
        out, finals = _per_sequence_loop(layer, x, lengths, hx)
    else:
        out, state = layer(x, hx[0] if layer.state_is_tensor else hx, lengths=lengths)
        finals = _parts(state)
    weight = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    loss = (out * weight).sum() + sum((s * (k + 2)).sum() for k, s in enumerate(finals))
    grads = torch.autograd.grad(loss, [x, *hx, *layer.parameters()])
    return [out, *finals, *grads]


def _assert_close(got: list[Tensor], ref: list[Tensor], tol: float = TOL) -> None:
    assert len(got) == len(ref)
    for a, b in zip(got, ref):
        assert a.shape == b.shape
        assert (a - b).abs().max().item() <= tol


@pytest.mark.parametrize("cell", USER_CELLS)
@pytest.mark.parametrize("backend", ["eager", "script", "auto"])
def test_user_cell_equals_a_per_sequence_python_loop(cell: type, backend: str) -> None:
    layer = _layer(cell, backend)
    x, lengths, hx = _inputs(layer)
    _assert_close(_results(layer, x, lengths, hx), _results(layer, x, lengths, hx, reference=True))
    assert layer.backend_used == ("script" if backend == "auto" else backend)


@pytest.mark.parametrize("cell", USER_CELLS + SPLIT_CELLS)
@pytest.mark.parametrize("lengths", [[6, 3, 1, 5], [6, 4, 3, 5], None], ids=["ragged", "min-3", "none"])
def test_script_equals_a_per_sequence_loop_over_forward_with_and_without_lengths(cell: type, lengths: list | None
                                                                                 ) -> None:  # fmt: skip
    """The scripted loop (the split's ``project_input`` once and ``step_projected`` per step, for the cells that
    offer it; no state selection in the steps every sequence has) against the cells' plain ``forward`` (for
    the split cells their parent's formula): outputs, final states and every gradient in float64."""
    layer = _layer(cell, "script")
    x, _, hx = _inputs(layer)
    given = None if lengths is None else torch.tensor(lengths)
    got = _results(layer, x, given, hx)
    _assert_close(got, _results(layer, x, torch.tensor(lengths or [x.shape[1]] * 4), hx, reference=True))
    for runner in layer._loops["script"].runners:
        split = cell in SPLIT_CELLS
        assert ("project_input" in runner.step_inputs.code) == split and ("step_projected" in runner.code) == split


@pytest.mark.slow
@pytest.mark.parametrize("cell", USER_CELLS)
def test_user_cell_through_compile_equals_eager(cell: type) -> None:
    layer, reference = _layer(cell, "compile", recurrent_dropout=0.3), _layer(cell, "eager", recurrent_dropout=0.3)
    x, lengths, hx = _inputs(layer)
    torch.manual_seed(3)
    got = _results(layer, x, lengths, hx)
    torch.manual_seed(3)
    _assert_close(got, _results(reference, x, lengths, hx))


@pytest.mark.parametrize("cell", USER_CELLS + SPLIT_CELLS)
def test_user_cell_script_equals_eager_with_recurrent_dropout_and_inter_layer_dropout(cell: type) -> None:
    layer = _layer(cell, "script", recurrent_dropout=0.3, dropout=0.2)
    reference = _layer(cell, "eager", recurrent_dropout=0.3, dropout=0.2)
    x, lengths, hx = _inputs(layer)
    torch.manual_seed(7)
    got = _results(layer, x, lengths, hx)
    torch.manual_seed(7)
    _assert_close(got, _results(reference, x, lengths, hx))
    torch.manual_seed(8)
    assert (_results(layer, x, lengths, hx)[0] - got[0]).abs().max() > 1e-3  # the masks are really drawn


def test_zoneout_on_a_user_cell_is_the_expected_update_in_eval() -> None:
    p = 0.25
    layer = _layer(IndRNNCell, "auto", zoneout=p, num_layers=1, bidirectional=False).eval()
    assert layer.backend_used == "eager" and "zoneout" in layer.backend_reason
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    out, h_n = layer(x)
    h = torch.zeros(2, 4, dtype=torch.float64)
    for t in range(5):
        h = p * h + (1 - p) * layer.cells[0](x[:, t], h)[0]
        torch.testing.assert_close(out[:, t], h)
    torch.testing.assert_close(h_n[0], h)


@pytest.mark.parametrize("cell", [PeepholeLSTMCell, SplitPeepholeLSTMCell])
def test_step_advances_every_layer_like_forward(cell: type) -> None:
    layer = _layer(cell, "script", bidirectional=False)
    x = torch.randn(3, 5, 3, dtype=torch.float64)
    out, final = layer(x)
    state = None
    for t in range(5):
        h, state = layer.step(x[:, t], state)
        torch.testing.assert_close(h, out[:, t])
    for a, b in zip(state, final):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="bidirectional"):
        _layer(IndRNNCell, "eager").step(x[:, 0])


# ------------------------------------------------------------------ bad cells
class WrongShapeCell(IndRNNCell):
    def forward(self, x: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        h, _ = super().forward(x, h)
        return torch.cat([h, h], 1), h


class WrongDtypeCell(IndRNNCell):
    def forward(self, x: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        h, _ = super().forward(x, h)
        return h.half(), h


class ListStateCell(IndRNNCell):
    def init_state(self, batch_size: int, device=None, dtype=None) -> list[Tensor]:  # type: ignore[override]
        return [torch.zeros(batch_size, self.hidden_size, device=device, dtype=dtype)]


class NoSizesCell(nn.Module):
    def __init__(self) -> None:
        super().__init__()


class BareOutputCell(IndRNNCell):
    def forward(self, x: Tensor, h: Tensor) -> Tensor:  # type: ignore[override]
        return super().forward(x, h)[0]


class HalfSplitCell(IndRNNCell):
    def project_input(self, x: Tensor) -> Tensor:
        return self.linear(x)


class DisagreeingSplitCell(SplitIndRNNCell):
    def step_projected(self, p: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        h = torch.relu(p + self.u * h + 1e-2)
        return h, h


class FlatProjectionCell(SplitIndRNNCell):
    def project_input(self, x: Tensor) -> Tensor:
        return self.linear(x).flatten()


@pytest.mark.parametrize(
    "cell, match",
    [
        (HalfSplitCell, r"HalfSplitCell defines project_input but not step_projected: the optional input split needs"),
        (DisagreeingSplitCell, r"DisagreeingSplitCell: step_projected\(project_input\(x\)\[t\], state\) must equal "
                               r"the step on \(x\[t\], state\); on a probe they differ by 0.01"),
        (FlatProjectionCell, r"FlatProjectionCell: project_input\(x \(T=1, B=2, 3\)\) must return a Tensor \(T, B, "
                             r"...\), got Tensor\(8,\)"),
        (WrongShapeCell, r"WrongShapeCell: h_t must be a Tensor\(2, 4\) .* got Tensor\(2, 8\)"),
        (WrongDtypeCell, r"WrongDtypeCell: h_t must be .*torch.float32.* got Tensor\(2, 4\) torch.float16"),
        (ListStateCell, r"ListStateCell: init_state\(2\) must be a Tensor or a tuple of Tensors, got list"),
        (NoSizesCell, r"NoSizesCell could not be built as cell\(input_size=3, hidden_size=4\)"),
        (BareOutputCell, r"BareOutputCell: step must return \(h_t, new_state\), got Tensor"),
    ],
)
def test_cells_that_break_the_contract_are_named_at_construction(cell: type, match: str) -> None:
    with pytest.raises(CellContractError, match=match):
        seqforge.Recurrent(cell, 3, 4)


@pytest.mark.parametrize(
    "spec, match",
    [
        ({"_target_": "helpers.nowhere.Cell"}, r"_target_ 'helpers.nowhere.Cell' cannot be imported"),
        ({"_target_": "collections.OrderedDict"}, r"_target_ 'collections.OrderedDict' must be an nn.Module subclass"),
        ({"hidden": 3}, "must name the cell class in _target_"),
        ("transformer", r"cell must be one of \['gru', 'lstm', 'rnn', 'rnn_relu', 'rnn_tanh'\], "
                        r"\['cfc', 'indrnn', 'mingru'\]"),
        (42, "cell must be a name, an nn.Module class"),
    ],
)
def test_bad_cell_specs_name_what_came(spec: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        seqforge.make_recurrent(spec, 3, 4)  # type: ignore[arg-type]


class UnscriptableCell(IndRNNCell):
    def forward(self, x: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        act = lambda t: torch.relu(t)  # noqa: E731  (TorchScript does not compile lambdas)
        h = act(self.linear(x) + self.u * h)
        return h, h


def test_unscriptable_cell_falls_back_under_auto_and_fails_clearly_under_script() -> None:
    auto = seqforge.Recurrent(UnscriptableCell, 3, 4, backend="auto")
    assert auto.backend_used == "eager"
    assert "UnscriptableCell cannot be scripted by TorchScript" in auto.backend_reason
    assert auto(torch.randn(5, 2, 3))[0].shape == (5, 2, 4)
    with pytest.raises(ValueError, match=r"script': cell .*UnscriptableCell cannot be scripted by TorchScript"):
        seqforge.Recurrent(UnscriptableCell, 3, 4, backend="script")
    with pytest.raises(ValueError, match=r"backend='cudnn'\): cell .*IndRNNCell is not a built-in cell"):
        seqforge.Recurrent(IndRNNCell, 3, 4, backend="cudnn")


@pytest.mark.parametrize("name, module, cls", [("IndRNN", "indrnn", "IndRNNCell"), ("mingru", "mingru", "MinGRUCell"),
                                               ("CfC", "cfc", "CfCCell")])  # fmt: skip
def test_the_package_cells_are_found_by_name(name: str, module: str, cls: str) -> None:
    cells = pytest.importorskip(f"seqforge.cells.{module}")  # written on another branch; skipped until merged
    layer = seqforge.make_recurrent(name, 3, 4, num_layers=2, bidirectional=True, backend="auto")
    assert isinstance(layer.cells[3], getattr(cells, cls))
    out, _ = layer(torch.randn(5, 2, 3), lengths=torch.tensor([5, 2]))
    assert out.shape == (5, 2, 8) and torch.all(out[2:, 1] == 0)


def test_make_recurrent_takes_names_classes_partials_and_target_nodes() -> None:
    assert isinstance(seqforge.make_recurrent("LSTM", 2, 3), seqforge.LSTM)
    assert seqforge.make_recurrent("Rnn_Relu", 2, 3).mode == "RNN_RELU"
    by_class = seqforge.make_recurrent(IndRNNCell, 2, 3, num_layers=2, backend="eager")
    assert isinstance(by_class, seqforge.Recurrent) and isinstance(by_class.cells[1], IndRNNCell)
    partial = seqforge.make_recurrent(functools.partial(seqforge.GRUCell, bias=False), 2, 3, backend="eager")
    assert partial.cells[0].bias_ih is None
    node = OmegaConf.create({"_target_": "seqforge.GRUCell", "_partial_": True, "bias": False})
    from_node = seqforge.make_recurrent(node, 2, 3, backend="eager")
    assert isinstance(from_node.cells[0], seqforge.GRUCell) and from_node.cells[0].bias_hh is None
    assert seqforge.make_recurrent({"_target_": "helpers.cells.PeepholeLSTMCell"}, 2, 3).state_is_tensor is False
    with pytest.raises(ValueError, match="layer_norm=True needs a built-in cell"):
        seqforge.make_recurrent(IndRNNCell, 2, 3, layer_norm=True)


# ------------------------------------------------------------------ padding never leaks
BUILTIN_BACKENDS = ["eager", "script", "cudnn", "auto", pytest.param("compile", marks=pytest.mark.slow)]


def _nan_padding(x: Tensor, lengths: Tensor) -> Tensor:
    bad = x.clone()
    for b, n in enumerate(lengths.tolist()):
        bad[b, n:] = float("nan") if b % 2 else float("inf")
    return bad


def _clean_and_poisoned(layer: nn.Module, x: Tensor, lengths: Tensor, hx: tuple[Tensor, ...]) -> None:
    clean = _results(layer, x, lengths, hx)
    poisoned = _results(layer, _nan_padding(x, lengths), lengths, hx)
    assert all(torch.isfinite(t).all() for t in poisoned)
    _assert_close(poisoned, clean, tol=0.0)


@pytest.mark.parametrize("backend", BUILTIN_BACKENDS)
@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN"])
def test_nan_and_inf_in_padding_never_reach_outputs_states_or_gradients(mode: str, backend: str) -> None:
    torch.manual_seed(0)
    layer = getattr(seqforge, mode)(3, 4, num_layers=2, bidirectional=True, batch_first=True, backend=backend).double()
    x, lengths, hx = _inputs(layer)
    _clean_and_poisoned(layer, x, lengths, hx)


@pytest.mark.parametrize("backend", ["eager", "script"])
def test_nan_in_padding_never_leaks_through_a_user_cell(backend: str) -> None:
    layer = _layer(PeepholeLSTMCell, backend)
    _clean_and_poisoned(layer, *_inputs(layer))


# ------------------------------------------------------------------ second derivatives
@pytest.mark.parametrize("backend", ["eager", "script"])
@pytest.mark.parametrize("mode, options", [("LSTM", {}), ("GRU", {"layer_norm": True}), ("RNN", {}),
                                           ("LSTM", {"layer_norm": True, "recurrent_dropout": 0.3})])  # fmt: skip
def test_second_derivatives_pass_gradgradcheck(mode: str, options: dict, backend: str) -> None:
    torch.manual_seed(0)
    layer = getattr(seqforge, mode)(2, 2, bidirectional=True, backend=backend, **options).double()
    x = torch.randn(3, 2, 2, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([3, 2])

    def run(x: Tensor, *params: Tensor) -> tuple[Tensor, ...]:
        torch.manual_seed(1)  # the same recurrent-dropout masks at every evaluation
        out, state = layer(x, lengths=lengths)
        return out, *_parts(state)

    assert torch.autograd.gradgradcheck(run, (x, *layer.parameters()))


def test_second_derivatives_of_the_script_backend_equal_eager_for_a_gradient_penalty() -> None:
    """The case of issue 12: create_graph=True gave None for weight_hh/biases and a wrong weight_ih grad."""
    grads = {}
    for backend in ("eager", "script"):
        torch.manual_seed(0)
        layer = seqforge.LSTM(3, 4, backend=backend).double()
        x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
        (dx,) = torch.autograd.grad(layer(x)[0].sum(), [x], create_graph=True)
        grads[backend] = torch.autograd.grad(dx.pow(2).sum(), list(layer.parameters()), allow_unused=True)
    assert all(g is not None for g in grads["script"])
    _assert_close(list(grads["script"]), list(grads["eager"]))


@pytest.mark.parametrize("cell", USER_CELLS + SPLIT_CELLS)
def test_user_cell_second_derivatives_through_script(cell: type) -> None:
    torch.manual_seed(0)
    layer = seqforge.Recurrent(cell, 2, 2, batch_first=True, backend="script").double()
    x = torch.randn(2, 3, 2, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([3, 2])
    assert torch.autograd.gradgradcheck(lambda x, *p: layer(x, lengths=lengths)[0], (x, *layer.parameters()))


# ------------------------------------------------------------------ parameters shared between names
def test_builtin_layer_names_and_cells_share_one_parameter_even_after_assign_loading() -> None:
    layer = seqforge.LSTM(3, 4, num_layers=2)
    assert layer.weight_hh_l1 is layer.cells[1].weight_hh
    assert len(list(layer.parameters())) == 8 and all("cells" not in n for n, _ in layer.named_parameters())
    other = nn.LSTM(3, 4, num_layers=2)
    layer.load_state_dict(other.state_dict(), assign=True)
    assert layer.weight_hh_l1 is layer.cells[1].weight_hh and len(list(layer.parameters())) == 8
    x = torch.randn(5, 2, 3)
    torch.testing.assert_close(layer(x)[0], other(x)[0])


# ------------------------------------------------------------------ through the training script
def test_a_user_cell_trains_through_scripts_train_py(tmp_path: Path) -> None:
    """``model.net.rnn.cell={_target_:...,_partial_:true}`` names any importable cell class (README form)."""
    from test_train import QUIET, REPO, run_script

    cell = "model.net.rnn.cell={_target_:helpers.cells.PeepholeLSTMCell,_partial_:true}"
    args = [str(REPO / "scripts" / "train.py"), "+experiment=parity_gru", "debug=fdr", cell,
            "model.net.rnn.backend=auto", *QUIET]  # fmt: skip
    result = run_script(args, tmp_path, extra_path=(str(REPO / "tests"),))
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "logs" / "parity_gru" / "runs").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["backend"] == "script" and math.isfinite(metrics["test/loss"])
    config = (run_dir / "config.yaml").read_text()
    assert "helpers.cells.PeepholeLSTMCell" in config


def test_scripted_user_cell_under_inference_mode_equals_eager() -> None:
    layer, reference = _layer(PeepholeLSTMCell, "script"), _layer(PeepholeLSTMCell, "eager")
    x, lengths, hx = _inputs(layer)
    layer(x, hx, lengths=lengths)[0].sum().backward()  # a trained-on scripted loop first
    with torch.inference_mode():
        for _ in range(3):
            got = layer(x, hx, lengths=lengths)
            ref = reference(x, hx, lengths=lengths)
            _assert_close([got[0], *got[1]], [ref[0], *ref[1]])


@pytest.mark.parametrize("cell", [PeepholeLSTMCell, SplitPeepholeLSTMCell])
def test_layers_with_scripted_runners_deepcopy_and_pickle(cell: type) -> None:
    """SWA and checkpoint code copy whole models: cached runners (ScriptModules) are rebuilt, never copied."""
    import copy
    import io

    layer = _layer(cell, "script")
    x, lengths, hx = _inputs(layer)
    out = layer(x, hx, lengths=lengths)[0]
    twin = copy.deepcopy(layer)
    assert twin.cells[0] is not layer.cells[0]
    torch.testing.assert_close(twin(x, hx, lengths=lengths)[0], out)
    buffer = io.BytesIO()
    torch.save(layer, buffer)
    buffer.seek(0)
    torch.testing.assert_close(torch.load(buffer, weights_only=False)(x, hx, lengths=lengths)[0], out)


@pytest.mark.slow  # torch.compile's first use
def test_compile_refuses_double_backward_with_a_clear_error() -> None:
    layer = _layer(IndRNNCell, "compile", num_layers=1, bidirectional=False)
    x = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    (dx,) = torch.autograd.grad(layer(x)[0].sum(), [x], create_graph=True)
    with pytest.raises(RuntimeError, match="does not currently support double backward"):
        torch.autograd.grad(dx.pow(2).sum(), list(layer.parameters()))


def test_conversions_that_make_new_parameters_keep_one_object_per_parameter() -> None:
    torch.__future__.set_overwrite_module_params_on_conversion(True)
    try:
        layer = seqforge.GRU(3, 4, bidirectional=True).double()
    finally:
        torch.__future__.set_overwrite_module_params_on_conversion(False)
    assert layer.weight_ih_l0_reverse is layer.cells[1].weight_ih and layer.cells[1].weight_ih.dtype == torch.float64
    assert len(list(layer.parameters())) == 8


# ------------------------------------------------------------------ decoders: one recurrent-dropout draw per sequence
@pytest.mark.parametrize("build", [lambda: seqforge.GRU(3, 4, num_layers=2, recurrent_dropout=0.5),
                                   lambda: seqforge.LSTM(3, 4, num_layers=2, recurrent_dropout=0.5),
                                   lambda: seqforge.Recurrent(PeepholeLSTMCell, 3, 4, num_layers=2,
                                                              recurrent_dropout=0.5)])
def test_steps_with_the_sequence_masks_equal_forward_in_training(build: Callable[[], seqforge.Recurrent]) -> None:
    """``step(x_t, state, masks)`` with :meth:`recurrent_masks` is the variational dropout ``forward`` applies:
    the same draw, constant over time (float64, training mode)."""
    layer = build().double().train()
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    torch.manual_seed(7)
    out, final = layer(x)
    torch.manual_seed(7)
    masks = layer.recurrent_masks(2)
    assert masks is not None and len(masks) == 2 and all(m.shape == (2, 4) for m in masks)
    state, steps = None, []
    for t in range(x.shape[0]):
        h, state = layer.step(x[t], state, masks)
        steps.append(h)
    torch.testing.assert_close(torch.stack(steps), out, atol=1e-12, rtol=0)
    for got, want in zip(_parts(state), _parts(final)):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=0)
    assert layer.eval().recurrent_masks(2) is None


def test_seq2seq_and_forecaster_decoders_keep_one_mask_per_sequence() -> None:
    from seqforge.models import Forecaster, Seq2Seq

    s2s = Seq2Seq(8, 8, rnn={"hidden_size": 4, "recurrent_dropout": 0.5}, embedding_dim=3).train()
    state = s2s.encode(torch.randint(3, 8, (2, 5)), torch.tensor([5, 3]))
    masks = state["masks"]
    assert masks is not None and all(m.shape == (2, 4) for m in masks)
    for _ in range(3):
        _, state = s2s.decode_step(torch.tensor([1, 1]), state)
        assert state["masks"] is masks
    assert s2s.eval().encode(torch.randint(3, 8, (2, 5)), torch.tensor([5, 3]))["masks"] is None
    fc = Forecaster(horizon=4, rnn={"hidden_size": 4, "recurrent_dropout": 0.5}, strategy="autoregressive").train()
    drawn = []
    original = fc.decoder.step
    fc.decoder.step = lambda x, s, m=None: (drawn.append(m), original(x, s, m))[1]  # type: ignore[method-assign]
    fc(torch.randn(2, 6, 1))
    assert len(drawn) == 4 and drawn[0] is not None and all(m is drawn[0] for m in drawn)


@pytest.mark.parametrize("backend", ["eager", "script"])
def test_jit_script_of_a_recurrent_over_a_user_cell_is_refused_saying_what_works(backend: str) -> None:
    layer = seqforge.Recurrent(PeepholeLSTMCell, 3, 5, backend=backend)
    with pytest.raises(TypeError, match=r"PeepholeLSTMCell.*no TorchScript form; use torch.export"):
        torch.jit.script(layer)
    x, lengths = torch.randn(7, 2, 3), torch.tensor([7, 4])
    program = torch.export.export(layer, (x,), {"lengths": lengths})  # what the message offers works
    out, _ = program.module()(x, lengths=lengths)
    torch.testing.assert_close(out, layer(x, lengths=lengths)[0])
