"""Export: ``torch.export`` (pt2) and ONNX (onnxruntime) of the layers with ``lengths``, dynamic batch and time.

The length checks stay eager ``ValueError`` s outside export (tests/test_layers.py); while exporting they
become a check inside the graph (``torch._assert_async``), and the step loop becomes one ``scan`` over time.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_train import QUIET, REPO, run_script, shrink
from torch import Tensor, nn

import seqforge
from seqforge.checkpoint import load_from_checkpoint
from seqforge.exporting import (
    EXAMPLE_BATCH,
    EXAMPLE_STEPS,
    ExportGraph,
    context_names,
    example_context,
    example_inputs,
    export_from_config,
    step_graphs,
)
from seqforge.models import ConditionalGenerator, Forecaster, Seq2Seq, SequenceClassifier
from seqforge.train import train
from seqforge.utils.config import ConfigError, compose_config

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


def bilstm(proj_size: int) -> LayerOutputs:
    """A 2-layer bidirectional LSTM, hidden size 5, projected to ``proj_size`` when not 0."""
    torch.manual_seed(0)
    layer = seqforge.LSTM(3, 5, num_layers=2, bidirectional=True, batch_first=True, proj_size=proj_size)
    return LayerOutputs(layer).eval()


def output_sizes(proj_size: int) -> tuple[int, int, int]:
    """Last dimensions of ``(output, h_n, c_n)`` of :func:`bilstm`: ``h`` has ``proj_size`` features when set."""
    h = proj_size or 5
    return 2 * h, h, 5


DYNAMIC = {"x": {0: torch.export.Dim("batch"), 1: torch.export.Dim("time")}, "lengths": {0: torch.export.Dim("batch")}}


@pytest.mark.parametrize("proj_size", [0, 2])
def test_torch_export_bilstm_with_lengths_matches_eager_at_other_shapes(proj_size: int) -> None:
    model = bilstm(proj_size)
    example = mixed_batch(4, 6, seed=0)
    program = torch.export.export(model, example, dynamic_shapes=DYNAMIC)
    exported = program.module()
    for k, (batch, steps) in enumerate(SHAPES):
        x, lengths = mixed_batch(batch, steps, seed=k + 1)
        outputs = exported(x, lengths)
        assert tuple(out.shape[-1] for out in outputs) == output_sizes(proj_size)
        for got, want in zip(outputs, model(x, lengths)):
            assert got.shape == want.shape
            torch.testing.assert_close(got, want, atol=TOL, rtol=0)
    # the length check lives in the graph: a length outside [1, T] fails when the program runs
    x, lengths = mixed_batch(3, 5, seed=9)
    for bad in (0, 6):
        lengths[2] = bad
        with pytest.raises(RuntimeError, match="lengths must lie in"):
            exported(x, lengths)


# the projected ONNX export takes about a minute on 2 shared cores
@pytest.mark.parametrize("proj_size", [0, pytest.param(2, marks=pytest.mark.slow)])
def test_onnx_bilstm_with_lengths_matches_eager_at_other_shapes(proj_size: int, tmp_path) -> None:
    model = bilstm(proj_size)
    path = tmp_path / "bilstm.onnx"
    torch.onnx.export(model, mixed_batch(4, 6, seed=0), str(path), dynamic_shapes=DYNAMIC,
                      input_names=["x", "lengths"], output_names=["output", "h_n", "c_n"], verbose=False)  # fmt: skip
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for k, (batch, steps) in enumerate(SHAPES):
        x, lengths = mixed_batch(batch, steps, seed=k + 1)
        got = session.run(None, {"x": x.numpy(), "lengths": lengths.numpy()})
        for g, want in zip(got, model(x, lengths)):
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


# ------------------------------------------------------------------------------------------ whole models
ORT_ONLY = r'''
import importlib.util, json, sys
sys.path[:] = [p for p in sys.argv[3].split("|")] + [p for p in sys.path if "site-packages" not in p]
assert importlib.util.find_spec("seqforge") is None, "seqforge is importable in the consumer"
import numpy as np, onnxruntime
meta = json.load(open(sys.argv[2]))
data = np.load(sys.argv[1])
session = onnxruntime.InferenceSession(sys.argv[1].replace(".npz", ".onnx"), providers=["CPUExecutionProvider"])
(out,) = session.run(None, {i["name"]: data[i["name"]] for i in meta["inputs"]})  # the inputs the JSON names
np.save(sys.argv[1].replace(".npz", ".out.npy"), out)
print(meta["task"], out.shape)
'''


def _site_packages(*modules: str) -> str:
    """The folders holding ``modules`` (onnxruntime, numpy ...), for a consumer without seqforge."""
    import importlib.util

    return "|".join(sorted({str(Path(importlib.util.find_spec(m).origin).parent.parent) for m in modules}))


def run_without_seqforge(path: Path, x: Tensor, lengths: Tensor, **context: Tensor) -> np.ndarray:
    """Run the ONNX file at ``path`` in ``python -I -S`` (no site, no PYTHONPATH: seqforge not importable),
    feeding the inputs its JSON lists (``context``: a forecaster's ``future``/``static``)."""
    data = path.with_suffix(".npz")
    np.savez(data, x=x.numpy(), lengths=lengths.numpy(), **{k: v.numpy() for k, v in context.items()})
    result = subprocess.run([sys.executable, "-I", "-S", "-c", ORT_ONLY, str(data), str(path.with_suffix(".json")),
                             _site_packages("onnxruntime", "numpy")], capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return np.load(path.with_suffix(".out.npy"))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A fast_dev_run checkpoint per exportable kind, trained when first asked for: ``{experiment: path}``."""

    class Trained(dict):
        def __missing__(self, experiment: str) -> str:
            out = tmp_path_factory.mktemp(experiment)
            overrides = [f"+experiment={experiment}", "debug=fdr", *QUIET, *shrink(experiment, out / "data")]
            metrics = train(compose_config("train", overrides, out))
            self[experiment] = metrics["best_ckpt_path"]
            return self[experiment]

    return Trained()


@pytest.fixture(scope="module")
def trained(checkpoints: dict[str, str]) -> dict[str, nn.Module]:
    """``{experiment: task}`` loaded from :func:`checkpoints` when first asked for."""

    class Loaded(dict):
        def __missing__(self, experiment: str) -> nn.Module:
            self[experiment] = load_from_checkpoint(checkpoints[experiment])
            return self[experiment]

    return Loaded()


# the main job's classifier (bidirectional GRU), a regressor, a tagger, two forecasters, a forecaster over
# many series with covariates and static features, a language model
EXPORTED = ("ucr_gru", "adding_lstm", "echo_tagger", "sine_forecast", "air_passengers", "us_macro", "char_lm")
FAST = ("ucr_gru", "us_macro")  # the others run with -m slow


def _kinds() -> list:
    return [pytest.param(e, id=e, marks=() if e in FAST else pytest.mark.slow) for e in EXPORTED]


@pytest.mark.parametrize("experiment", _kinds())
def test_exported_model_matches_eager_and_runs_without_seqforge(experiment: str, trained, tmp_path: Path) -> None:
    task = trained[experiment]
    eager = ExportGraph(task.net).eval()
    x, lengths = example_inputs(task.net, batch=5, steps=EXAMPLE_STEPS + 6, seed=7)  # not the export example
    assert x.shape[:2] != example_inputs(task.net)[0].shape[:2] and len(set(lengths.tolist())) > 1
    context = example_context(task.net, batch=5, seed=7)  # us_macro: future (5, 4, 2), static (5, 2)
    assert list(context) == (["future", "static"] if experiment == "us_macro" else [])
    want = eager(x, lengths, **context).detach()

    onnx_path = seqforge.export(task, tmp_path / "model.onnx", format="onnx")
    got = run_without_seqforge(onnx_path, x, lengths, **context)
    torch.testing.assert_close(torch.from_numpy(got), want, atol=TOL, rtol=0)
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["task"] == type(task).__name__ and meta["inputs"][0]["dtype"] == str(x.dtype).removeprefix("torch.")
    assert [i["name"] for i in meta["inputs"]] == ["x", "lengths", *context]
    for entry, value in zip(meta["inputs"][2:], context.values()):  # named, typed and shaped as fed
        assert entry["dtype"] == str(value.dtype).removeprefix("torch.") and entry["shape"][0] == "batch"
        assert entry["shape"][1:] == list(value.shape[1:])
    dm_state = task.datamodule.state_dict()
    for key in ("classes", "mean", "std", "scaler"):
        assert meta.get(key) == dm_state.get(key)
    if "vocab" in dm_state:
        assert meta["vocab"]["itos"] == task.datamodule.vocab.itos

    # a length outside [1, T]: that row comes out NaN in ONNX (no assertion operator), the others are unchanged
    bad = lengths.clone()
    bad[1], bad[2] = 0, x.shape[1] + 1
    got_bad = run_without_seqforge(onnx_path, x, bad, **context)
    assert np.isnan(got_bad[1:3]).all() and not np.isnan(got_bad[[0, 3, 4]]).any()
    torch.testing.assert_close(torch.from_numpy(got_bad[[0, 3, 4]]), want[[0, 3, 4]], atol=TOL, rtol=0)
    assert "NaN" in meta["inputs"][1]["out_of_range"]

    pt2_path = seqforge.export(task, tmp_path / "model.pt2", format="pt2")
    program = torch.export.load(str(pt2_path)).module()
    torch.testing.assert_close(program(x, lengths, **context), want, atol=TOL, rtol=0)
    with pytest.raises(RuntimeError, match=r"lengths must lie in \[1, T\]"):  # pt2 keeps the check
        program(x, bad, **context)
    x1, lengths1 = example_inputs(task.net, batch=1, steps=EXAMPLE_STEPS + 2, seed=8)  # batch of one, longer
    context1 = example_context(task.net, batch=1, seed=8)
    torch.testing.assert_close(program(x1, lengths1, **context1), eager(x1, lengths1, **context1).detach(), atol=TOL,
                               rtol=0)  # fmt: skip


def test_panel_forecaster_takes_named_covariate_inputs_encoded_by_its_json(checkpoints, trained, tmp_path) -> None:
    """us_macro: past covariates in ``x``, known-future covariates as ``future``, embedded static ids as ``static``;
    a consumer that encodes raw rows and decodes the forecast by the JSON alone gets the datamodule's windows and
    the task's forecast in original units; missing or wrong context inputs are refused, naming them."""
    from statistics import NormalDist

    from seqforge.data.panel import us_macro

    task, dm = trained["us_macro"], trained["us_macro"].datamodule
    onnx_path = seqforge.export(task, tmp_path / "macro.onnx", format="onnx")
    pt2_path = export_from_config(compose_config("export", [f"ckpt_path={checkpoints['us_macro']}", "format=pt2",
                                                            f"output={tmp_path / 'macro_pt2.pt2'}"]))  # fmt: skip
    meta = json.loads((tmp_path / "macro_pt2.json").read_text())
    onnx_meta = json.loads((tmp_path / "macro.json").read_text())
    series, scaler, horizon = meta["series"], meta["scaler"], meta["forecast"]["horizon"]
    assert series == onnx_meta["series"] and series["ids"] == dm.series_ids and scaler["kind"] == "standard"
    assert series["x_channels"] == ["target", "tbilrate", "unemp", "quarter_sin", "quarter_cos"]
    assert [i.get("columns") for i in meta["inputs"][2:]] == [["quarter_sin", "quarter_cos"], ["variable", "kind"]]
    assert meta["inputs"][3]["cardinalities"] == [8, 3] and meta["forecast"]["channels"] == ["mean", "variance"]

    # encode every test window from the raw table with the JSON alone: the windows the datamodule builds
    frame, window = us_macro(), series["window"]
    shift, scale = np.asarray(series["covariate_shift"]), np.asarray(series["covariate_scale"])
    rows_x, rows_future, rows_static, rows_series = [], [], [], []
    for i, name in enumerate(series["ids"]):
        rows = frame[frame["series_id"] == name].sort_values("time")
        target = (rows["target"].to_numpy() - scaler["shift"][i]) / scaler["scale"][i]
        covariates = (rows[series["x_channels"][1:]].to_numpy() - shift) / scale
        static = [categories.index(rows[column].iloc[0])
                  for column, categories in zip(series["static_columns"], series["categories"])]  # fmt: skip
        for t in range(len(rows) - dm.test_size, len(rows) - horizon + 1):
            rows_x.append(np.concatenate([target[t - window : t, None], covariates[t - window : t]], axis=1))
            rows_future.append(covariates[t : t + horizon, -len(series["future_channels"]) :])
            rows_static.append(static)
            rows_series.append(i)
    x = torch.tensor(np.stack(rows_x), dtype=torch.float32)  # (72, 16, 5): not the export example's (3, 7)
    context = {"future": torch.tensor(np.stack(rows_future), dtype=torch.float32), "static": torch.tensor(rows_static)}
    built = dm.build()["test"]  # (history, target, future, static, series) per window
    assert len(built) == len(x) > EXAMPLE_BATCH and x.shape[1] > EXAMPLE_STEPS
    torch.testing.assert_close(x, torch.stack([b[0] for b in built]), atol=TOL, rtol=0)
    torch.testing.assert_close(context["future"], torch.stack([b[2] for b in built]), atol=TOL, rtol=0)
    assert torch.equal(context["static"], torch.stack([b[3] for b in built]))
    assert rows_series == [b[4] for b in built]

    lengths = torch.full((len(x),), window)
    want = ExportGraph(task.net).eval()(x, lengths, **context).detach()
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    feeds = {"x": x.numpy(), "lengths": lengths.numpy(), **{k: v.numpy() for k, v in context.items()}}
    (got,) = session.run(None, feeds)
    torch.testing.assert_close(torch.from_numpy(got), want, atol=TOL, rtol=0)
    program = torch.export.load(str(pt2_path)).module()
    torch.testing.assert_close(program(x, lengths, **context), want, atol=TOL, rtol=0)

    # decode by the JSON (per-series scale and shift; a variance scales by scale ** 2): the task's own forecast
    index = torch.tensor(rows_series)
    forecast = task.forecast(x, lengths, future=context["future"], static=context["static"], series=index)
    row_shift = np.asarray(scaler["shift"])[rows_series, None]  # (72, 1): each window's series
    row_scale = np.asarray(scaler["scale"])[rows_series, None]
    mean, std = got[..., 0] * row_scale + row_shift, np.sqrt(got[..., 1] * row_scale**2)
    np.testing.assert_allclose(mean, forecast["prediction"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(mean + NormalDist().inv_cdf(0.9) * std, forecast["intervals"][0.8][1], atol=1e-4, rtol=0)

    # a static id outside [0, cardinality): NaN rows in ONNX (a negative id would silently wrap), pt2 and eager raise
    bad_static = context["static"].clone()
    bad_static[1, 0], bad_static[2, 1] = -1, 3
    (got_bad,) = session.run(None, {**feeds, "static": bad_static.numpy()})
    assert np.isnan(got_bad[1:3]).all() and not np.isnan(got_bad[3:]).any()
    np.testing.assert_allclose(got_bad[[0, *range(3, len(x))]], got[[0, *range(3, len(x))]], atol=TOL, rtol=0)
    assert "NaN" in onnx_meta["inputs"][3]["out_of_range"] and "raises" in meta["inputs"][3]["out_of_range"]
    with pytest.raises(RuntimeError, match=r"static ids must lie in \[0, cardinality\)"):
        program(x, lengths, future=context["future"], static=bad_static)
    with pytest.raises(ValueError, match=r"static column 1 must hold ids in \[0, 3\) \(static_cardinalities\), got 3"):
        task.net(x[2:3], lengths[2:3], future=context["future"][2:3], static=bad_static[2:3])
    # missing or misshaped context: each refusal names the input
    with pytest.raises(ValueError, match=r"future must be \(B, horizon, future_size\) = \(72, 4, 2\), got None"):
        ExportGraph(task.net)(x, lengths, static=context["static"])
    with pytest.raises(ValueError, match=r"Required inputs \(\['future'\]\) are missing"):
        session.run(None, {k: v for k, v in feeds.items() if k != "future"})
    with pytest.raises(onnxruntime.capi.onnxruntime_pybind11_state.InvalidArgument,
                       match=r"(?s)input: future .*index: 1 Got: 5 Expected: 4"):  # fmt: skip
        session.run(None, {**feeds, "future": np.zeros((len(x), 5, 2), dtype=np.float32)})
    with pytest.raises(ValueError, match=r"expected \['future', 'static'\]"):
        program(x, lengths, future=context["future"])
    with pytest.raises((AssertionError, RuntimeError), match=r"future\.size\(\)\[1\] == 4"):
        program(x, lengths, future=torch.zeros(len(x), 5, 2), static=context["static"])


@pytest.mark.parametrize("fmt", ["pt2", pytest.param("onnx", marks=pytest.mark.slow)])
@pytest.mark.parametrize(("options", "names"), [
    pytest.param({"static_cardinalities": (4,)}, ["static"], id="static-only"),
    pytest.param({"future_size": 3, "strategy": "autoregressive", "window_norm": "last", "head": "quantile"},
                 ["future"], id="future-only-autoregressive"),
])  # fmt: skip
def test_forecaster_graph_takes_the_context_inputs_its_net_reads(options, names, fmt: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = Forecaster(horizon=3, input_size=2, rnn={"hidden_size": 6}, **options).eval()
    assert context_names(net) == names
    x, lengths = example_inputs(net, batch=EXAMPLE_BATCH + 2, steps=EXAMPLE_STEPS + 4, seed=3)
    context = example_context(net, batch=EXAMPLE_BATCH + 2, seed=3)
    assert list(context) == names and len(set(lengths.tolist())) > 1
    want = net(x, lengths, **context).detach()
    path = seqforge.export(net, tmp_path / f"f.{fmt}", format=fmt)
    meta = json.loads((tmp_path / "f.json").read_text())
    assert [i["name"] for i in meta["inputs"]] == ["x", "lengths", *names]
    if fmt == "pt2":
        got = torch.export.load(str(path)).module()(x, lengths, **context)
    else:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == ["x", "lengths", *names]
        (out,) = session.run(None, {"x": x.numpy(), "lengths": lengths.numpy(), **{k: v.numpy() for k, v in
                                                                                  context.items()}})  # fmt: skip
        got = torch.from_numpy(out)
    torch.testing.assert_close(got, want, atol=TOL, rtol=0)


def test_export_refuses_bad_arguments(trained, tmp_path: Path) -> None:
    task = trained["ucr_gru"]
    with pytest.raises(ValueError, match=r"format must be one of \('onnx', 'pt2'\), got 'tflite'"):
        seqforge.export(task, tmp_path / "m.tflite", format="tflite")
    with pytest.raises(ValueError, match=r"output path .*missing/m\.onnx.* folder that does not exist"):
        seqforge.export(task, tmp_path / "missing" / "m.onnx")
    with pytest.raises(ValueError, match=r"ends in \.json"):
        seqforge.export(task, tmp_path / "m.json")
    with pytest.raises(ValueError, match=r"task_or_net is a Linear; exported are SequenceClassifier, .*Seq2Seq"):
        seqforge.export(nn.Linear(2, 3), tmp_path / "m.onnx")
    with pytest.raises(ValueError, match=r"future and static are forecaster inputs; SequenceClassifier takes"):
        ExportGraph(task.net)(*example_inputs(task.net), static=torch.zeros(EXAMPLE_BATCH, 1, dtype=torch.long))
    assert not list(tmp_path.iterdir())


def test_export_script_writes_the_graph_and_names_bad_keys(checkpoints, tmp_path: Path) -> None:
    ckpt = checkpoints["ucr_gru"]
    out = tmp_path / "jv.pt2"
    result = run_script([str(REPO / "scripts" / "export.py"), f"ckpt_path={ckpt}", "format=pt2", f"output={out}"],
                        tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert out.exists() and json.loads(out.with_suffix(".json").read_text())["classes"]
    with pytest.raises(ConfigError, match=r"config 'format': export: format must be one of"):
        export_from_config(compose_config("export", [f"ckpt_path={ckpt}", "format=onx", f"output={out}"]))
    with pytest.raises(ConfigError, match=r"config 'output': .*folder that does not exist"):
        export_from_config(compose_config("export", [f"ckpt_path={ckpt}", f"output={tmp_path}/no/m.onnx"]))
    with pytest.raises(ConfigError, match=r"config 'output'"):
        export_from_config(compose_config("export", [f"ckpt_path={ckpt}"]))


def test_torchscript_format_is_refused_up_front_saying_what_to_use(tmp_path: Path) -> None:
    net = SequenceClassifier(num_classes=3, input_size=2, rnn={"hidden_size": 4}).eval()
    with pytest.raises(ValueError) as error:
        seqforge.export(net, tmp_path / "net.ts", format="torchscript")
    message = str(error.value)
    for part in ("export: format='torchscript' is not offered for whole models",
                 "use format='pt2' or format='onnx'", "seqforge.fused.export_torchscript(seqforge.LSTM(...))"):
        assert part in message, message
    assert not any(tmp_path.iterdir())  # nothing written


# ------------------------------------------------------------------ seq2seq and conditional generation
GREEDY_ORT = r'''
import importlib.util, json, sys
sys.path[:] = [p for p in sys.argv[3].split("|")] + [p for p in sys.path if "site-packages" not in p]
assert importlib.util.find_spec("seqforge") is None, "seqforge is importable in the consumer"
import numpy as np, onnxruntime
meta, data = json.load(open(sys.argv[2])), np.load(sys.argv[1])
folder = sys.argv[2].rsplit("/", 1)[0]
sessions = {k: onnxruntime.InferenceSession(f"{folder}/{g['file']}", providers=["CPUExecutionProvider"])
            for k, g in meta["graphs"].items()}
encoder, step, decode = sessions["encoder"], sessions["decoder_step"], meta["decode"]
feeds = {i["name"]: data[i["name"]] for i in meta["graphs"]["encoder"]["inputs"]}
state = dict(zip([o["name"] for o in meta["graphs"]["encoder"]["outputs"]], encoder.run(None, feeds)))
outputs = [o["name"] for o in meta["graphs"]["decoder_step"]["outputs"]]
batch, max_len = len(next(iter(feeds.values()))), int(data["max_len"])
token = decode["eos_id"] is not None
previous = np.full(batch, decode["start"], dtype=np.int64) if token else np.zeros_like(data["zeros"])
finished, lengths, out = np.zeros(batch, dtype=bool), np.zeros(batch, dtype=np.int64), []
for _ in range(max_len):
    names = [i["name"] for i in meta["graphs"]["decoder_step"]["inputs"]][1:]
    result = dict(zip(outputs, step.run(None, {"previous": previous, **{n: state[n] for n in names}})))
    for produced, carried in decode["carry"].items():
        state[carried] = result[produced]
    if not token:
        previous = result["mean"]
        out.append(previous)
        continue
    previous = np.where(finished, decode["pad_id"], result["logits"].argmax(-1)).astype(np.int64)
    lengths += ~finished
    out.append(previous)
    finished |= previous == decode["eos_id"]
    if finished.all():
        break
np.save(sys.argv[1].replace(".npz", ".out.npy"), np.stack(out, 1))
np.save(sys.argv[1].replace(".npz", ".lengths.npy"), lengths)
'''


def greedy_without_seqforge(meta_path: Path, max_len: int, **inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The greedy loop over the exported ONNX graphs in ``python -I -S`` (numpy and onnxruntime only)."""
    data = meta_path.with_suffix(".npz")
    np.savez(data, max_len=max_len, **inputs)
    result = subprocess.run([sys.executable, "-I", "-S", "-c", GREEDY_ORT, str(data), str(meta_path),
                             _site_packages("onnxruntime", "numpy")], capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return np.load(meta_path.with_suffix(".out.npy")), np.load(meta_path.with_suffix(".lengths.npy"))


def graph_names(meta: dict, graph: str) -> list[str]:
    return [o["name"] for o in meta["graphs"][graph]["outputs"]]


def scrambled(net: nn.Module, seed: int = 0) -> nn.Module:
    """``net`` with weights ``N(0, 0.6^2)``: outputs that depend on the input, ends at mixed steps."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.6)
    return net.eval()


def _decoders() -> list:
    return [
        pytest.param(lambda: Seq2Seq(10, 11, embedding_dim=8, rnn={"hidden_size": 16, "num_layers": 2}),
                     id="seq2seq-lstm-additive"),  # fmt: skip
        pytest.param(lambda: ConditionalGenerator(vocab_size=10, num_conditions=4, rnn={"hidden_size": 16}),
                     id="generator-tokens"),  # fmt: skip
        pytest.param(lambda: Seq2Seq(10, 11, embedding_dim=8, attention="none", rnn={"hidden_size": 16, "cell": "gru"}),
                     id="seq2seq-gru-no-attention", marks=pytest.mark.slow),  # fmt: skip
        pytest.param(lambda: ConditionalGenerator(output_size=2, cond_size=3, output_head="gaussian",
                                                  rnn={"hidden_size": 8, "cell": "gru"}), id="generator-values",
                     marks=pytest.mark.slow),  # fmt: skip
    ]


@pytest.mark.parametrize("build", _decoders())
def test_decoder_graphs_greedy_loop_equals_the_models_own_greedy(build, tmp_path: Path) -> None:
    net = scrambled(build())
    max_len = 12
    if isinstance(net, Seq2Seq):
        gen = torch.Generator().manual_seed(5)  # not the export example's batch
        inputs = {"src": torch.randint(3, 10, (6, 9), generator=gen), "src_lengths": torch.tensor([9, 1, 4, 7, 2, 5])}
        want, want_lengths = net.greedy(inputs["src"], inputs["src_lengths"], max_len=max_len)
    else:
        cond = torch.tensor([0, 1, 2, 3, 1, 0]) if net.is_token else torch.randn(6, 3)
        inputs = {"cond": cond}
        want, want_lengths = net.generate(cond, max_len=max_len)
    if want.dtype == torch.long:
        assert len(set(want_lengths.tolist())) > 1 and int(want_lengths.max()) == max_len  # ends early and not

    graph = seqforge.export(net, tmp_path / "model.onnx", format="onnx")
    assert graph == tmp_path / "model.encoder.onnx" and (tmp_path / "model.decoder_step.onnx").exists()
    meta_path = tmp_path / "model.json"
    meta = json.loads(meta_path.read_text())
    assert meta["net"] == type(net).__name__ and set(meta["graphs"]) == {"encoder", "decoder_step"}
    extra = {} if want.dtype == torch.long else {"zeros": np.zeros((6, net.output_size), dtype=np.float32)}
    got, got_lengths = greedy_without_seqforge(meta_path, max_len, **{k: v.numpy() for k, v in inputs.items()},
                                               **extra)  # fmt: skip
    if want.dtype == torch.long:
        assert np.array_equal(got, want.numpy()) and np.array_equal(got_lengths, want_lengths.numpy())
    else:
        torch.testing.assert_close(torch.from_numpy(got), want, atol=TOL, rtol=0)

    if isinstance(net, Seq2Seq):  # a source length outside [1, S]: NaN in that row's state, the others unchanged
        session = onnxruntime.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
        good = session.run(None, {k: v.numpy() for k, v in inputs.items()})
        bad = session.run(None, {"src": inputs["src"].numpy(), "src_lengths": np.array([9, 0, 10, 7, 2, 5])})
        for name, g, b in zip(graph_names(meta, "encoder"), good, bad):
            rows = (slice(None), [1, 2]) if name in ("h", "c") else [1, 2]
            keep = (slice(None), [0, 3, 4, 5]) if name in ("h", "c") else [0, 3, 4, 5]
            assert name == "mask" or np.isnan(b[rows]).all()
            np.testing.assert_allclose(b[keep], g[keep], atol=TOL, rtol=0)

    seqforge.export(net, tmp_path / "model.pt2", format="pt2")
    encoder = torch.export.load(str(tmp_path / "model.encoder.pt2")).module()
    step = torch.export.load(str(tmp_path / "model.decoder_step.pt2")).module()
    graphs = step_graphs(net)
    state = list(encoder(*inputs.values()))
    names, carried = graphs.state, graphs.carried
    previous = graphs.previous[:1].expand(6, *graphs.previous.shape[1:]).clone()
    outs = []
    for _ in range(max_len):
        result = step(previous, tuple(state))
        for k, name in enumerate(carried):
            state[names.index(name)] = result[len(graphs.outputs) + k]
        previous = result[0].argmax(-1) if previous.dtype == torch.long else result[0]
        outs.append(previous)
    pt2 = torch.stack(outs, 1)
    if want.dtype == torch.long:  # no masking after the end: compare up to each row's end
        for row, n in enumerate(want_lengths.tolist()):
            assert torch.equal(pt2[row, :n], want[row, :n])
    else:
        torch.testing.assert_close(pt2, want, atol=TOL, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("experiment", ["g2p_cmudict", "ucr_generator"])
def test_decoder_checkpoint_exports_its_vocabularies_and_max_len(experiment: str, trained, tmp_path: Path) -> None:
    task = trained[experiment]
    graph = seqforge.export(task, tmp_path / "model.onnx", format="onnx")
    meta = json.loads((tmp_path / "model.json").read_text())
    assert graph.name == meta["graphs"]["encoder"]["file"] == "model.encoder.onnx"
    dm_state = task.datamodule.state_dict()
    for key in ("classes", "mean", "std", "scaler"):
        assert meta.get(key) == dm_state.get(key)
    vocabs = [name for name in ("vocab", "src_vocab", "tgt_vocab") if getattr(task.datamodule, name, None)]
    for name in vocabs:
        vocab = getattr(task.datamodule, name)
        assert meta[name]["itos"] == vocab.itos and meta[name]["eos_id"] == vocab.eos_id
    assert vocabs or "classes" in meta
    assert meta["decode"]["max_len"] > 0
