"""Export: ``torch.export`` (pt2) and ONNX (onnxruntime) of the layers with ``lengths``, dynamic batch and time.

The length checks stay eager ``ValueError`` s outside export (tests/test_layers.py); while exporting they
become a check inside the graph (``torch._assert_async``), and the step loop becomes one ``scan`` over time.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import seqforge

onnxruntime = pytest.importorskip("onnxruntime")  # the `export` extra

TOL = 1e-5
# (batch, time) pairs other than the export example's (4, 6); each batch mixes lengths, 1 and T included.
SHAPES = [(1, 3), (7, 9), (2, 1), (5, 14)]


class LayerOutputs(nn.Module):
    """A layer with ``lengths`` as a graph of plain tensors ``(x, lengths) -> (output, h_n, c_n)``."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        out, (h_n, c_n) = self.layer(x, lengths=lengths)
        return out, h_n, c_n


def mixed_batch(batch: int, steps: int, seed: int) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, steps + 1, (batch,), generator=gen)
    lengths[0] = steps
    if batch > 1:
        lengths[1] = 1
    return torch.randn(batch, steps, 3, generator=gen), lengths


@pytest.fixture(scope="module")
def bilstm() -> LayerOutputs:
    torch.manual_seed(0)
    return LayerOutputs(seqforge.LSTM(3, 5, num_layers=2, bidirectional=True, batch_first=True)).eval()


DYNAMIC = {"x": {0: torch.export.Dim("batch"), 1: torch.export.Dim("time")}, "lengths": {0: torch.export.Dim("batch")}}


def test_torch_export_bilstm_with_lengths_matches_eager_at_other_shapes(bilstm: LayerOutputs) -> None:
    example = mixed_batch(4, 6, seed=0)
    program = torch.export.export(bilstm, example, dynamic_shapes=DYNAMIC)
    exported = program.module()
    for k, (batch, steps) in enumerate(SHAPES):
        x, lengths = mixed_batch(batch, steps, seed=k + 1)
        for got, want in zip(exported(x, lengths), bilstm(x, lengths)):
            assert got.shape == want.shape
            torch.testing.assert_close(got, want, atol=TOL, rtol=0)
    # the length check lives in the graph: a length outside [1, T] fails when the program runs
    x, lengths = mixed_batch(3, 5, seed=9)
    for bad in (0, 6):
        lengths[2] = bad
        with pytest.raises(RuntimeError, match="lengths must lie in"):
            exported(x, lengths)


def test_onnx_bilstm_with_lengths_matches_eager_at_other_shapes(bilstm: LayerOutputs, tmp_path) -> None:
    path = tmp_path / "bilstm.onnx"
    torch.onnx.export(bilstm, mixed_batch(4, 6, seed=0), str(path), dynamic_shapes=DYNAMIC,
                      input_names=["x", "lengths"], output_names=["output", "h_n", "c_n"], verbose=False)  # fmt: skip
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for k, (batch, steps) in enumerate(SHAPES):
        x, lengths = mixed_batch(batch, steps, seed=k + 1)
        got = session.run(None, {"x": x.numpy(), "lengths": lengths.numpy()})
        for g, want in zip(got, bilstm(x, lengths)):
            assert g.shape == tuple(want.shape)
            torch.testing.assert_close(torch.from_numpy(g), want.detach(), atol=TOL, rtol=0)


def test_eager_length_check_is_unchanged_and_script_backend_exports_through_the_eager_loop() -> None:
    layer = seqforge.LSTM(3, 5, batch_first=True, backend="script").eval()
    x, lengths = mixed_batch(3, 4, seed=2)
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, 4\].*got min 0, max 4"):
        layer(x, lengths=torch.tensor([4, 0, 2]))
    program = torch.export.export(LayerOutputs(layer), (x, lengths),
                                  dynamic_shapes=DYNAMIC)  # fmt: skip
    x2, lengths2 = mixed_batch(6, 8, seed=3)
    for got, want in zip(program.module()(x2, lengths2), LayerOutputs(layer)(x2, lengths2)):
        torch.testing.assert_close(got, want, atol=TOL, rtol=0)
