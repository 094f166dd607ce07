"""Checkpoints rebuild themselves: load_from_checkpoint, evaluate and predict without the training config."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from test_train import QUIET, REPO, run_script

from seqforge.checkpoint import datamodule_for, load_from_checkpoint
from seqforge.data.series import SeriesDataModule
from seqforge.data.vocab import Vocabulary
from seqforge.evaluate import evaluate
from seqforge.predict import predict, predict_from_config
from seqforge.train import train
from seqforge.utils.config import ConfigError, compose_config

TRAINED = ("ucr_lstm", "reverse_attention", "char_lm", "sine_forecast", "echo_tagger", "pattern_generator")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """One fast_dev_run per topology: ``{experiment: metrics}`` (metrics hold the checkpoint path)."""
    runs = {}
    for experiment in TRAINED:
        out = tmp_path_factory.mktemp(experiment)
        runs[experiment] = train(compose_config("train", [f"+experiment={experiment}", "debug=fdr", *QUIET], out))
    return runs


def test_load_from_checkpoint_round_trips(checkpoints: dict[str, dict]) -> None:
    path = checkpoints["ucr_lstm"]["best_ckpt_path"]
    saved = torch.load(path, weights_only=True)
    task = load_from_checkpoint(path)
    assert type(task).__name__ == "ClassificationTask" and not task.training
    state = task.state_dict()
    assert state.keys() == saved["state_dict"].keys()
    assert all(torch.equal(state[k], saved["state_dict"][k]) for k in state)
    assert task.datamodule.state_dict() == saved["seqforge"]["datamodule_state"]
    assert task.datamodule.net_kwargs == {"input_size": 12, "num_classes": 9}
    again = load_from_checkpoint(path)
    x, lengths = torch.randn(3, 7, 12), torch.tensor([7, 5, 2])
    assert torch.equal(task.net(x, lengths), again.net(x, lengths))


def test_evaluate_reproduces_the_test_metrics(checkpoints: dict[str, dict], tmp_path: Path) -> None:
    metrics = checkpoints["ucr_lstm"]
    cfg = compose_config("eval", [f"ckpt_path={metrics['best_ckpt_path']}", "trainer.limit_test_batches=1",
                                  "trainer.accelerator=cpu"], tmp_path)
    result = evaluate(cfg)
    assert result["test/acc"] == pytest.approx(metrics["test/acc"], abs=1e-6)
    assert json.loads((tmp_path / "metrics.json").read_text())["test/acc"] == result["test/acc"]


def test_evaluate_without_ckpt_path_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'ckpt_path'.*ckpt_path=PATH"):
        evaluate(compose_config("eval", [], tmp_path))


def test_predict_each_topology(checkpoints: dict[str, dict]) -> None:
    def load(experiment: str):
        return load_from_checkpoint(checkpoints[experiment]["best_ckpt_path"])

    ucr = load("ucr_lstm")
    series = ";".join(",".join(["0.1"] * 12) for _ in range(15))
    (label,) = predict(ucr, [series])
    assert label in ucr.datamodule.classes
    (reversed_ids,) = predict(load("reverse_attention"), ["4 5 6"], max_len=6)
    assert len(reversed_ids.split()) <= 6 and all(t.isdigit() for t in reversed_ids.split())
    (tags,) = predict(load("echo_tagger"), ["4 5 6 7"])
    assert len(tags.split()) == 4 and all(t.isdigit() for t in tags.split())
    texts = predict(load("char_lm"), ["the "], max_len=10, temperature=0.8, num_samples=2)
    assert len(texts) == 2 and all(t.startswith("the ") and len(t) > 4 for t in texts)
    (forecast,) = predict(load("sine_forecast"), [",".join(str(10 + math.sin(i)) for i in range(24))])
    values = [float(v) for v in forecast.split(",")]
    assert len(values) == 6 and all(math.isfinite(v) for v in values)
    outputs = predict(load("pattern_generator"), ["0", "2"], max_len=8, temperature=0.0)
    assert len(outputs) == 2 and all(all(t.isdigit() for t in out.split()) for out in outputs)


def test_predict_reports_bad_input(checkpoints: dict[str, dict]) -> None:
    ucr = load_from_checkpoint(checkpoints["ucr_lstm"]["best_ckpt_path"])
    with pytest.raises(ValueError, match="12 channels"):
        predict(ucr, ["1,2;3,4"])
    with pytest.raises(ValueError, match="numbers"):
        predict(ucr, ["hello"])


def test_predict_from_config_reads_a_file(checkpoints: dict[str, dict], tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("\ufeff4 5 6\n5 4\n", encoding="utf-8")  # a byte-order mark is not input
    cfg = compose_config("predict", [f"ckpt_path={checkpoints['echo_tagger']['best_ckpt_path']}",
                                     f"input_file={tmp_path / 'in.txt'}", f"output_file={tmp_path / 'out.txt'}"])
    outputs = predict_from_config(cfg)
    assert (tmp_path / "out.txt").read_text().splitlines() == outputs
    assert [len(line.split()) for line in outputs] == [3, 2]
    with pytest.raises(ConfigError, match="exactly one"):
        predict_from_config(compose_config("predict", [f"ckpt_path={checkpoints['echo_tagger']['best_ckpt_path']}"]))


def test_bad_checkpoints_fail_clearly(checkpoints: dict[str, dict], tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no checkpoint file"):
        load_from_checkpoint(tmp_path / "missing.ckpt")
    (tmp_path / "corrupt.ckpt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_from_checkpoint(tmp_path / "corrupt.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "foreign.ckpt")
    with pytest.raises(ValueError, match="no 'seqforge' entry"):
        load_from_checkpoint(tmp_path / "foreign.ckpt")
    checkpoint = torch.load(checkpoints["ucr_lstm"]["best_ckpt_path"], weights_only=True)
    checkpoint["seqforge"]["config"]["model"]["net"]["rnn"]["hidden_size"] = 8  # weights of another model
    torch.save(checkpoint, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="do not fit the stored model"):
        load_from_checkpoint(tmp_path / "other.ckpt")


class _Payload:
    """Unpickling this would create a marker file: code from the checkpoint file running on load."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_loading_never_executes_code_from_the_file(checkpoints: dict[str, dict], tmp_path: Path) -> None:
    checkpoint = torch.load(checkpoints["ucr_lstm"]["best_ckpt_path"], weights_only=True)
    marker = tmp_path / "code_ran"
    checkpoint["seqforge"]["payload"] = _Payload(marker)
    torch.save(checkpoint, tmp_path / "evil.ckpt")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_from_checkpoint(tmp_path / "evil.ckpt")
    assert not marker.exists()


def _eval_config(metrics: dict, tmp_path: Path, *overrides: str):
    return compose_config("eval", [f"ckpt_path={metrics['best_ckpt_path']}", "trainer.limit_test_batches=2",
                                   "trainer.accelerator=cpu", "~logger", *overrides], tmp_path)


def _write_ts(path: Path, channels: int, labels: list[str], rows: int = 6) -> None:
    header = f"@problemName Fake\n@univariate false\n@equalLength true\n@classLabel true {' '.join(labels)}\n@data\n"
    data = "".join(":".join(",".join(str((r + c + t) % 5) for t in range(8)) for c in range(channels))
                   + f":{labels[r % len(labels)]}\n" for r in range(rows))
    path.write_text(header + data)


@pytest.mark.parametrize(("overrides", "match"), [
    # the issue's case: 12-channel JapaneseVowels checkpoint, 1-channel GunPoint data (acc 0.0 before)
    (["+data.name=GunPoint"], r"normalizes 12 channels, but .*GunPoint_TRAIN\.ts has 1 .*"
                              r"data\.name=GunPoint \(checkpoint: JapaneseVowels\)"),
    (["data=ucr", "data.name=GunPoint"], r"normalizes 12 channels.*data\.name=GunPoint \(checkpoint: JapaneseVowels\)"),
    # 12 channels but labels the checkpoint never saw
    (["+data.name=Fake", "+data.path=FOLDER"], r"labels \['x', 'y'\] never seen in training \(training labels: "
                                               r"\['1', .*'9'\]\).*data\.path=/"),
    # another kind of datamodule: the checkpoint's class names and normalization cannot be used there
    (["data=sine"], r"fitted data state has keys \['classes', 'mean', 'std'\]; SineForecastDataModule cannot take"),
])
def test_evaluate_refuses_data_that_do_not_fit_the_checkpoint(overrides, match, checkpoints, tmp_path: Path) -> None:
    for name in ("TRAIN", "TEST"):
        _write_ts(tmp_path / f"Fake_{name}.ts", channels=12, labels=["x", "y"])
    overrides = [o.replace("FOLDER", str(tmp_path)) for o in overrides]
    with pytest.raises(ConfigError, match=match) as error:
        evaluate(_eval_config(checkpoints["ucr_lstm"], tmp_path / "eval", *overrides))
    assert "config 'data'" in str(error.value) and checkpoints["ucr_lstm"]["best_ckpt_path"] in str(error.value)
    assert not (tmp_path / "eval" / "metrics.json").exists()


def test_eval_script_stops_on_the_issue_case(checkpoints, tmp_path: Path) -> None:
    """`scripts/eval.py ckpt_path=<JapaneseVowels> +data.name=GunPoint` exited 0 with acc 0.0."""
    args = [str(REPO / "scripts" / "eval.py"), f"ckpt_path={checkpoints['ucr_lstm']['best_ckpt_path']}",
            "+data.name=GunPoint", "trainer.accelerator=cpu"]
    result = run_script(args, tmp_path)
    assert result.returncode == 1
    assert "normalizes 12 channels, but" in result.stderr and "GunPoint_TRAIN.ts has 1" in result.stderr
    assert not list(tmp_path.rglob("metrics.json"))


def test_evaluate_refuses_other_net_sizes(checkpoints, tmp_path: Path) -> None:
    """A forecaster built for horizon 6 is not tested on 3-step targets."""
    with pytest.raises(ConfigError, match=r"net was built for horizon=6, SineForecastDataModule gives horizon=3"):
        evaluate(_eval_config(checkpoints["sine_forecast"], tmp_path, "+data.horizon=3"))
    with pytest.raises(ConfigError, match=r"'data\.horizn': unknown key .*did you mean 'horizon'"):
        evaluate(_eval_config(checkpoints["sine_forecast"], tmp_path, "+data.horizn=3"))


def test_evaluate_on_other_text_keeps_the_checkpoint_vocabulary(checkpoints, tmp_path: Path) -> None:
    """A char LM trained on a generated stream, tested on a text file (another datamodule class): the text is
    encoded with the checkpoint's vocabulary (before, the file's own vocabulary silently renumbered the ids)."""
    text = tmp_path / "other.txt"
    text.write_text("the cat sat on the mat. a dog ran far away! " * 40)
    stored = torch.load(checkpoints["char_lm"]["best_ckpt_path"], weights_only=True)["seqforge"]["datamodule_state"]
    cfg = _eval_config(checkpoints["char_lm"], tmp_path, "data=text", f"data.path={text}", "data.block_size=16",
                       "data.batch_size=4")
    datamodule = datamodule_for(torch.load(checkpoints["char_lm"]["best_ckpt_path"], weights_only=True), cfg.data)
    assert type(datamodule).__name__ == "TextDataModule"
    assert datamodule.vocab.state_dict() == stored["vocab"]
    own = Vocabulary.build([text.read_text()])
    assert own.state_dict() != stored["vocab"]  # the file's own vocabulary would number the ids differently
    metrics = evaluate(cfg)
    assert math.isfinite(metrics["test/loss"])


def test_evaluate_same_data_with_overrides_runs(checkpoints, tmp_path: Path) -> None:
    metrics = evaluate(_eval_config(checkpoints["ucr_lstm"], tmp_path, "+data.batch_size=7"))
    assert 0.0 <= metrics["test/acc"] <= 1.0


def test_predict_checks_inputs_against_the_checkpoint(checkpoints: dict[str, dict],
                                                     caplog: pytest.LogCaptureFixture) -> None:
    lm = load_from_checkpoint(checkpoints["char_lm"]["best_ckpt_path"])
    unseen = next(c for c in "\u00e9\u00df#@~" if c not in lm.datamodule.vocab.stoi)
    with caplog.at_level("WARNING", logger="seqforge.predict"):
        predict(lm, [f"th{unseen} "], max_len=2, temperature=0.0)
    assert f"tokens ['{unseen}']" in caplog.text and "read as <unk>" in caplog.text
    forecaster = load_from_checkpoint(checkpoints["sine_forecast"]["best_ckpt_path"])
    with pytest.raises(ValueError, match=r"reads 1 channels per step \(its input_size\), got 2"):
        predict(forecaster, [";".join("1,2" for _ in range(24))])  # before: the second channel silently dropped
    tagger = load_from_checkpoint(checkpoints["echo_tagger"]["best_ckpt_path"])
    size = tagger.datamodule.net_kwargs["vocab_size"]
    with pytest.raises(ValueError, match=rf"token ids in \[0, {size}\) \(its vocab_size\), got \[{size}\]"):
        predict(tagger, [f"4 5 {size}"])
    generator = load_from_checkpoint(checkpoints["pattern_generator"]["best_ckpt_path"])
    n = generator.datamodule.net_kwargs["num_conditions"]
    with pytest.raises(ValueError, match=rf"class ids in \[0, {n}\) \(its num_conditions\)"):
        predict(generator, [str(n)])


def test_a_stored_log_scaler_refuses_a_non_positive_series(tmp_path: Path) -> None:
    """A checkpoint's log_standard scaler on a series with zeros would give -inf/NaN inputs silently."""
    csv_file = tmp_path / "series.csv"
    csv_file.write_text("y\n" + "".join(f"{v}\n" for v in [3.0, 0.0, 2.0, 5.0] * 10))
    datamodule = SeriesDataModule(path=csv_file, column="y", window=4, test_size=4, val_size=4)
    datamodule.load_state_dict({"scaler": {"kind": "log_standard", "shift": 1.0, "scale": 0.5}, "mase_scale": 1.0})
    with pytest.raises(ValueError, match=r"log_standard scaler .* needs a positive series, got a minimum of 0\.0"):
        datamodule.setup("test")


def test_empty_or_folder_checkpoints_are_named(checkpoints: dict[str, dict], tmp_path: Path) -> None:
    empty = tmp_path / "epoch_003.ckpt"
    empty.touch()  # what a full disk leaves
    with pytest.raises(ValueError, match=rf"'{empty}' is empty \(0 bytes\), not a readable checkpoint"):
        load_from_checkpoint(empty)
    with pytest.raises(ValueError, match=r"is empty \(0 bytes\)"):
        evaluate(compose_config("eval", [f"ckpt_path={empty}"], tmp_path))
    with pytest.raises(IsADirectoryError, match=rf"'{tmp_path}' is a directory; give a .ckpt file in it"):
        load_from_checkpoint(tmp_path)


def test_a_weight_mismatch_lists_every_key_with_both_shapes(checkpoints: dict[str, dict], tmp_path: Path) -> None:
    checkpoint = torch.load(checkpoints["ucr_lstm"]["best_ckpt_path"], weights_only=True)
    stored = checkpoint["seqforge"]
    stored["config"]["model"]["net"]["rnn"]["hidden_size"] = 8  # the config of another model than the weights'
    torch.save(checkpoint, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="do not fit the stored model") as error:
        load_from_checkpoint(tmp_path / "other.ckpt")
    lines = str(error.value).splitlines()[1:]
    other = instantiate(OmegaConf.create(stored["config"]["model"]), net=stored["net_kwargs"]).state_dict()
    mismatched = [k for k, v in checkpoint["state_dict"].items() if v.shape != other[k].shape]
    assert len(mismatched) == len(lines) and len(lines) <= 21
    for key in mismatched:
        (line,) = [line for line in lines if f"size mismatch for {key}:" in line]
        assert (f"shape torch.Size({list(checkpoint['state_dict'][key].shape)}) from checkpoint, the shape in "
                f"current model is torch.Size({list(other[key].shape)})") in line
