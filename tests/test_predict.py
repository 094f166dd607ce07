"""Predict at scale: batches, input files in the datamodules' formats, max_len from the data, truncation flagged,
and the README's predict commands pasted after training."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_train import QUIET, REPO, run_script

from seqforge.checkpoint import load_from_checkpoint
from seqforge.data.base import package_data_path
from seqforge.predict import default_max_len, predict, predict_from_config, read_inputs
from seqforge.train import train
from seqforge.utils.config import compose_config

JV_TEST = package_data_path("sktime", "datasets", "data", "JapaneseVowels", "JapaneseVowels_TEST.ts")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    paths = {}
    for experiment in ("ucr_gru", "reverse_attention"):
        out = tmp_path_factory.mktemp(experiment)
        paths[experiment] = train(compose_config("train", [f"+experiment={experiment}", "debug=fdr", *QUIET],
                                                 out))["best_ckpt_path"]  # fmt: skip
    return paths


def test_batched_predictions_equal_one_at_a_time_on_a_ts_file(checkpoints) -> None:
    task = load_from_checkpoint(checkpoints["ucr_gru"])
    series = read_inputs(JV_TEST, task)[:23]  # 7 to 29 steps: batches of mixed lengths
    assert len({len(s) for s in series}) > 3
    batched = predict(task, series, batch_size=8)
    assert batched == predict(task, series, batch_size=1)
    assert all(label in task.datamodule.classes for label in batched)
    text = ";".join(",".join(f"{v:.9g}" for v in step) for step in series[0])  # the same series as text
    assert predict(task, [text]) == batched[:1]
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
        predict(task, series, batch_size=0)


def test_max_len_comes_from_the_data_and_cut_outputs_are_flagged(checkpoints, tmp_path: Path, caplog) -> None:
    task = load_from_checkpoint(checkpoints["reverse_attention"])
    task.datamodule.setup("fit")
    longest = max(len(tgt) for _, tgt in task.datamodule.splits["train"])
    assert default_max_len(task) == longest + max(5, longest // 2)
    inputs = ["4 5 6 7", "5 4", "6 6 6 4 5", "7 7 4", "5 6 7 4 5 6", "4"]
    eos = task.net.eos_id
    with torch.no_grad():  # a net that never ends its output (nor emits <pad>/<bos>): every output runs into max_len
        task.net.out.bias[: eos + 1] = -1e4
    with caplog.at_level(logging.WARNING, logger="seqforge.predict"):
        cut = predict(task, inputs, max_len=3, batch_size=4)
    assert all(out.truncated and len(out.split()) == 3 for out in cut)
    assert "6 of 6 outputs reached max_len=3" in caplog.text
    assert all(out.truncated and len(out.split()) == default_max_len(task) for out in predict(task, inputs[:2]))
    with torch.no_grad():
        task.net.out.bias[eos] = 1e4  # a net that ends at once: complete (empty) outputs, never flagged
    assert all(out == "" and not out.truncated for out in predict(task, inputs, max_len=3))
    with torch.no_grad():
        task.net.out.bias[eos] = -1e4
    torch.save({**torch.load(checkpoints["reverse_attention"], weights_only=True), "state_dict": task.state_dict()},
               tmp_path / "never_ends.ckpt")  # fmt: skip
    (tmp_path / "src.tsv").write_text("4 5 6 7\t7 6 5 4\n5 4\t4 5\n")
    cfg = compose_config("predict", [f"ckpt_path={tmp_path / 'never_ends.ckpt'}",
                                     f"input_file={tmp_path / 'src.tsv'}", f"output_file={tmp_path / 'out.txt'}",
                                     "max_len=1", "progress=false"])  # fmt: skip
    outputs = predict_from_config(cfg)
    lines = (tmp_path / "out.txt").read_text().splitlines()
    assert len(outputs) == 2 and all(out.truncated for out in outputs)
    assert all(line.endswith("\t[truncated: max_len reached]") for line in lines)


def test_predict_reads_a_series_csv(tmp_path: Path) -> None:
    out = tmp_path / "sine"
    ckpt = train(compose_config("train", ["+experiment=sine_forecast", "debug=fdr", *QUIET], out))["best_ckpt_path"]
    task = load_from_checkpoint(ckpt)
    values = 10 + np.sin(np.arange(60) / 3)
    (tmp_path / "s.csv").write_text("t,value\n" + "".join(f"{t},{v}\n" for t, v in enumerate(values)))
    (item,) = read_inputs(tmp_path / "s.csv", task, column="value")
    window = task.datamodule.window
    assert np.allclose(item[:, 0], values[-window:])
    (forecast,) = predict(task, [item])
    assert forecast == predict(task, [",".join(str(float(v)) for v in values[-window:])])[0]
    with pytest.raises(ValueError, match="name its series with input_column=NAME"):
        read_inputs(tmp_path / "s.csv", task)


# The README's "Predict" block, pasted after `python scripts/train.py +experiment=ucr_gru` (here with
# debug=fdr so that it takes seconds): the newest run's last.ckpt, a JapaneseVowels test file and one series.
# The README's Python example (the main job's classifier on the JapaneseVowels test file).
README_PYTHON = """\
import glob
import seqforge
from seqforge.data.base import package_data_path
from seqforge.data.ucr import read_ts
from seqforge.predict import predict
task = seqforge.load_from_checkpoint(sorted(glob.glob("logs/ucr_gru/runs/*/checkpoints/last.ckpt"))[-1])
series, labels = read_ts(package_data_path("sktime", "datasets", "data", "JapaneseVowels", "JapaneseVowels_TEST.ts"))
speakers = predict(task, series, batch_size=64)   # one speaker label per sequence, e.g. '3'
print(sum(s == y for s, y in zip(speakers, labels)) / len(labels))   # test accuracy, about 0.98
"""
README_PREDICT = [
    'CKPT=$(ls -d logs/ucr_gru/runs/*/ | tail -1)checkpoints/last.ckpt',
    'python scripts/predict.py ckpt_path=$CKPT input_file=$(python -c "from seqforge.data.base import '
    "package_data_path as p; print(p('sktime', 'datasets', 'data', 'JapaneseVowels', 'JapaneseVowels_TEST.ts'))\") "
    'output_file=speakers.txt',
    "python scripts/predict.py ckpt_path=$CKPT "
    "'input=\"1.2,-0.3,0.5,0.1,-0.2,0.3,0.0,0.1,-0.1,0.2,0.0,0.1;1.1,-0.2,0.4,0.2,-0.3,0.2,0.1,0.0,-0.2,0.1,0.1,0.0\"'",
    "python - <<'EOF'\n" + README_PYTHON + "EOF",
]


def test_readme_predict_commands_work_when_pasted_after_the_main_job(tmp_path: Path) -> None:
    trained = run_script([str(REPO / "scripts" / "train.py"), "+experiment=ucr_gru", "debug=fdr"], tmp_path,
                         timeout=600)  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-2000:]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "PYTHONPATH": str(REPO),
           "SEQFORGE_LOG_DIR": str(tmp_path / "logs"), "OMP_NUM_THREADS": "1"}
    (tmp_path / "scripts").symlink_to(REPO / "scripts")  # the commands run from the repository root
    script = "set -e\n" + "\n".join(README_PREDICT)
    result = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, env=env,
                            timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    speakers = (tmp_path / "speakers.txt").read_text().splitlines()
    assert len(speakers) == 370 and set(speakers) <= {str(k) for k in range(1, 10)}
    *_, label, accuracy = result.stdout.strip().splitlines()
    assert label in {str(k) for k in range(1, 10)} and 0.0 <= float(accuracy) <= 1.0
