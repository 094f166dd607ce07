"""``seqforge.export(format="torchscript")`` of a model with a user cell is refused saying what to do instead,
and doing it (``format="pt2"``) gives a file whose outputs equal the eager model's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import seqforge
from seqforge.exporting import example_inputs
from seqforge.models import SequenceClassifier

TOL = 1e-5  # float32, the exported program against the eager model


def test_torchscript_refusal_for_a_user_cell_says_what_to_use_and_pt2_does_it(tmp_path: Path) -> None:
    torch.manual_seed(0)
    rnn = {"cell": {"_target_": "helpers.cells.PeepholeLSTMCell"}, "hidden_size": 4, "num_layers": 1,
           "bidirectional": True}  # fmt: skip
    net = SequenceClassifier(num_classes=3, input_size=2, rnn=rnn).eval()
    with pytest.raises(ValueError) as error:
        seqforge.export(net, tmp_path / "net.ts", format="torchscript")
    message = str(error.value)
    for part in ("export: format='torchscript' is not offered for whole models",
                 "use format='pt2' or format='onnx': both take every cell, your own included",
                 "pt2: torch.export.load(path).module()",
                 "python scripts/export.py ckpt_path=CKPT format=pt2 output=model.pt2",
                 "seqforge.fused.export_torchscript(seqforge.LSTM(...))"):
        assert part in message, message
    assert not (tmp_path / "net.json").exists() and not (tmp_path / "net.ts").exists()

    path = seqforge.export(net, tmp_path / "net.pt2", format="pt2")  # what the message says to do
    program = torch.export.load(str(path)).module()
    for batch, steps in ((4, 9), (1, 3)):  # other shapes than the export example's
        x, lengths = example_inputs(net, batch=batch, steps=steps, seed=5)
        torch.testing.assert_close(program(x, lengths), net(x, lengths), atol=TOL, rtol=0)
