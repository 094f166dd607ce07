"""Checkpoints rebuild themselves: load_from_checkpoint, evaluate and predict without the training config."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from test_train import QUIET

from seqforge.checkpoint import load_from_checkpoint
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
    cfg = compose_config("eval", [f"ckpt_path={metrics['best_ckpt_path']}", "+trainer.limit_test_batches=1",
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
    (tmp_path / "in.txt").write_text("4 5 6\n5 4\n")
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
    checkpoint["seqforge"]["config"]["model"]["net"]["hidden_size"] = 8  # weights of another model
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
