"""Bad configs fail before any training starts, with a message naming the key: unknown keys, wrong
types, and combinations that cannot work (cuDNN with layer norm, a bidirectional decoder, a truncated-BPTT
window longer than the sequences, a hidden size of 0, ...)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_train import QUIET, REPO, run_script

from seqforge.evaluate import evaluate
from seqforge.predict import predict_from_config
from seqforge.train import train
from seqforge.utils.config import ConfigError, compose_config

CASES = [
    ("ucr_lstm", ["model.net.rnn.backend=cudnn", "model.net.rnn.layer_norm=true"], "model.net",
     r"cudnn.*layer_norm=True"),
    ("ucr_lstm", ["model.net.rnn.hidden_size=0"], "model.net", r"hidden_size must be a positive int, got 0"),
    ("ucr_lstm", ["model.net.rnn.num_layers=0"], "model.net", r"num_layers must be a positive int"),
    ("ucr_lstm", ["model.net.rnn.cell=transformer"], "model.net", r"cell must be one of"),
    ("ucr_lstm", ["model.net.rnn.backend=warp"], "model.net", r"backend: expected one of"),
    ("ucr_lstm", ["model.net.pooling=avg"], "model.net", r"pooling must be one of"),
    ("ucr_lstm", ["model.label_smoothing=1.5"], "model", r"label_smoothing must be in \[0, 1\)"),
    ("ucr_lstm", ["model.optimizer.lr=fast"], "model.optimizer.lr", r"expected float"),
    ("ucr_lstm", ["data.val_fraction=1.5"], "data", r"val_fraction must be a fraction"),
    ("ucr_lstm", ["data.name=NoSuchSet"], "data", r"NoSuchSet"),
    ("ucr_lstm", ["trainer.max_epochs=-3"], "trainer", r"max_epochs"),
    ("ucr_lstm", ["+model.net.rnn.hidden=8"], "model.net.rnn.hidden", r"did you mean 'hidden_size'"),
    ("ucr_lstm", ["+model.net.hidden_size=8"], "model.net.hidden_size", r"did you mean 'rnn\.hidden_size'"),
    ("reverse_attention", ["+model.net.decoder_bidirectional=true"], "model.net.decoder_bidirectional", r"unknown key"),
    ("reverse_attention", ["model.net.attention=luong"], "model.net", r"attention must be one of"),
    ("reverse_attention", ["model.teacher_forcing=sometimes"], "model", r"teacher_forcing must be one of"),
    ("char_lm", ["data.block_size=100000"], "data", r"block_size=100000 .*longer than"),
    ("char_lm", ["data.batch_size=0"], "data", r"batch_size must be a positive int"),
    ("sine_forecast", ["data.window=100000"], "data", r"too short for window=100000"),
    ("sine_forecast", ["model.net.strategy=sideways"], "model.net", r"strategy"),
    ("ucr_lstm", ["seed=abc"], "seed", r"abc"),
    ("ucr_lstm", ["seed=-1"], "seed", r"expected an int in \[0, 4294967295\], got -1"),
    ("ucr_lstm", ["++seedd=3"], "seedd", r"unknown top-level key; did you mean 'seed'"),
    ("ucr_lstm", ["model.optimizer.lr=-1"], "model.optimizer.lr", r"AdamW refuses lr=-1 \(Invalid learning rate"),
    ("ucr_lstm", ["+model.optimizer.betas=[0.9,1.5]"], "model.optimizer.betas", r"refuses betas=\[0\.9, 1\.5\]"),
    ("g2p_cmudict", ["model.scheduler.factor=2"], "model.scheduler.factor", r"ReduceLROnPlateau refuses factor=2"),
    ("char_lm", ["trainer.gradient_clip_val=0.5"], "trainer.gradient_clip_val",
     r"LanguageModelTask optimizes manually and clips gradients itself; set trainer\.gradient_clip_val=null "
     r"model\.gradient_clip_val=0\.5"),
]


@pytest.mark.parametrize(("experiment", "overrides", "key", "match"), CASES, ids=[" ".join(c[1]) for c in CASES])
def test_bad_config_fails_before_training_and_names_the_key(experiment, overrides, key, match, tmp_path: Path) -> None:
    cfg = compose_config("train", [f"+experiment={experiment}", "extras.print_config=false", *overrides], tmp_path)
    with pytest.raises(ConfigError, match=match) as error:
        train(cfg)
    message = str(error.value)
    assert f"'{key}'" in message or f"full_key: {key}" in message, message
    assert not (tmp_path / "checkpoints").exists()
    assert not list(tmp_path.rglob("events.out.tfevents.*"))


@pytest.mark.parametrize(("overrides", "key"), [(["++seedd=3"], "seedd"),
                                               (["model.optimizer.lr=-1"], "model.optimizer.lr")])
def test_train_script_names_the_key_before_reading_data(overrides, key, tmp_path: Path) -> None:
    result = run_script([str(REPO / "scripts" / "train.py"), "+experiment=parity_gru", *QUIET, *overrides], tmp_path)
    assert result.returncode == 1
    assert f"ConfigError: config '{key}'" in result.stderr, result.stderr[-2000:]
    assert "Instantiating datamodule" not in result.stdout + result.stderr


def test_eval_and_predict_refuse_top_level_typos(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'allow_target': unknown top-level key; did you mean 'allow_targets'"):
        evaluate(compose_config("eval", ["ckpt_path=x.ckpt", "++allow_target=[x.]"], tmp_path))
    with pytest.raises(ConfigError, match=r"config 'max_length': unknown top-level key; did you mean 'max_len'"):
        predict_from_config(compose_config("predict", ["ckpt_path=x.ckpt", "input=1", "++max_length=3"]))
    with pytest.raises(ConfigError, match=r"config 'seed': expected an int in \[0, 4294967295\], got -1"):
        predict_from_config(compose_config("predict", ["ckpt_path=x.ckpt", "input=1", "seed=-1"]))
