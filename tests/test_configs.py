"""Every config composes and every node instantiates; experiment selection and config checks fail clearly."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import OmegaConf

from seqforge.train import fill_monitor, instantiate_group, train
from seqforge.utils.config import (
    CONFIG_DIR,
    ConfigError,
    TrainSchema,
    check_config,
    compose_config,
    instantiate_node,
    locate,
)

EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))
GROUPS = ("data", "model", "trainer", "callbacks", "logger")


def test_experiment_group_is_not_in_defaults_so_plus_selects_it(tmp_path: Path) -> None:
    cfg = compose_config("train", ["+experiment=parity_gru"], tmp_path)
    assert cfg.task_name == "parity_gru"
    assert cfg.data._target_.endswith("ParityDataModule")
    defaults = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "train.yaml")["defaults"])
    assert {"data", "model", "trainer"} <= {key for entry in defaults if isinstance(entry, dict) for key in entry}
    assert not any("experiment" in str(entry) for entry in defaults)
    with pytest.raises(ConfigCompositionException, match=r"\+experiment=parity_gru"):
        compose_config("train", ["experiment=parity_gru"], tmp_path)


def test_misspelled_experiment_lists_the_available_ones(tmp_path: Path) -> None:
    with pytest.raises(MissingConfigException) as info:
        compose_config("train", ["+experiment=ucr_lstn"], tmp_path)
    message = str(info.value)
    assert "experiment/ucr_lstn" in message
    assert all(name in message for name in EXPERIMENTS)


def test_the_experiment_list_covers_every_topology() -> None:
    expected = {"adding_lstm", "parity_gru", "echo_tagger", "reverse_attention", "pattern_generator", "char_lm",
                "sine_forecast", "ucr_lstm", "g2p_cmudict", "shakespeare_char", "sunspots", "air_passengers"}
    assert expected <= set(EXPERIMENTS)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_and_nodes_instantiate(experiment: str, tmp_path: Path) -> None:
    """Data module, callbacks, loggers and trainer of every experiment (net and task: test_train's fdr runs)."""
    cfg = compose_config("train", [f"+experiment={experiment}"], tmp_path)
    check_config(cfg, TrainSchema, GROUPS)
    assert cfg.task_name == experiment
    assert isinstance(instantiate_node("data", cfg.data), L.LightningDataModule)
    task_class = locate(cfg.model._target_)
    assert issubclass(task_class, L.LightningModule)
    best_cfg = cfg.callbacks.get("model_checkpoint")  # an experiment may drop it (sunspots: final weights)
    chosen = best_cfg.monitor if best_cfg is not None else None  # null: the task's own metric
    fill_monitor(cfg.callbacks, task_class.monitor, task_class.monitor_mode)
    callbacks = instantiate_group(cfg.callbacks, "callbacks")
    checkpoints = [c for c in callbacks if isinstance(c, ModelCheckpoint)]
    last = next(c for c in checkpoints if c.filename == "last")
    assert last.monitor is None  # last.ckpt is written every epoch, in every experiment
    if best_cfg is not None:
        (best,) = (c for c in checkpoints if c is not last)
        assert best.monitor == (chosen or task_class.monitor)
        assert chosen is not None or best.mode == task_class.monitor_mode
    if cfg.callbacks.get("early_stopping") is not None:
        assert next(c for c in callbacks if isinstance(c, EarlyStopping)).monitor == task_class.monitor
    loggers = instantiate_group(cfg.logger, "logger")
    assert [type(lg) for lg in loggers] == [TensorBoardLogger]
    trainer = instantiate_node("trainer", cfg.trainer, logger=loggers, callbacks=callbacks)
    assert isinstance(trainer, L.Trainer) and trainer.max_epochs == cfg.trainer.max_epochs


@pytest.mark.parametrize("preset", ["fdr", "overfit", "limit", "profiler"])
def test_debug_presets_compose_into_a_trainer(preset: str, tmp_path: Path) -> None:
    cfg = compose_config("train", ["+experiment=parity_gru", f"debug={preset}"], tmp_path)
    check_config(cfg, TrainSchema, GROUPS)
    trainer = instantiate_node("trainer", cfg.trainer, logger=False, callbacks=[])
    assert isinstance(trainer, L.Trainer)
    if preset == "fdr":
        assert trainer.fast_dev_run
    if preset == "overfit":
        assert trainer.overfit_batches == 3 and cfg.callbacks.early_stopping is None


@pytest.mark.parametrize("preset", ["cpu", "ddp_cpu"])
def test_trainer_presets_instantiate_on_cpu(preset: str, tmp_path: Path) -> None:
    cfg = compose_config("train", [f"trainer={preset}"], tmp_path)
    trainer = instantiate_node("trainer", cfg.trainer, logger=False, callbacks=[])
    assert trainer.num_devices == (2 if preset == "ddp_cpu" else 1)


@pytest.mark.parametrize("preset", ["gpu", "ddp"])
def test_accelerator_presets_compose_and_check(preset: str, tmp_path: Path) -> None:
    cfg = compose_config("train", [f"trainer={preset}", "trainer.precision=bf16-mixed"], tmp_path)
    check_config(cfg, TrainSchema, GROUPS)
    assert cfg.trainer.accelerator == "gpu"


def test_loggers_and_launchers_compose(tmp_path: Path) -> None:
    cfg = compose_config("train", ["logger=many_loggers", "hydra/launcher=parallel"], tmp_path)
    assert sorted(cfg.logger) == ["csv", "tensorboard"]
    assert [type(lg).__name__ for lg in instantiate_group(cfg.logger, "logger")] == ["TensorBoardLogger", "CSVLogger"]
    assert cfg.hydra.launcher.n_jobs == 2
    cfg = compose_config("train", ["hydra/launcher=slurm", "hydra.launcher.gpus_per_node=4"], tmp_path)
    assert cfg.hydra.launcher.tasks_per_node == 4 and cfg.hydra.launcher._target_.endswith("SlurmLauncher")


def test_paths_follow_environment_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEQFORGE_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("SEQFORGE_LOG_DIR", str(tmp_path / "l"))
    cfg = compose_config("train", [])
    assert cfg.paths.data_dir == str(tmp_path / "d") and cfg.paths.log_dir == str(tmp_path / "l")
    assert cfg.hydra.run.dir.startswith(str(tmp_path / "l" / "train" / "runs"))
    assert cfg.hydra.sweep.dir.startswith(str(tmp_path / "l" / "train" / "multiruns"))


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("seed=abc", r"'seed'.*abc"),
        ("train=maybe", r"'train'"),
        ("trainer.max_epochs=abc", r"'trainer\.max_epochs'.*int.*abc"),
        ("trainer.precision=bf15", r"'trainer\.precision'.*bf16-mixed"),
        ("+trainer.max_epoch=3", r"'trainer\.max_epoch'.*did you mean 'max_epochs'"),
        ("+model.net.rnn.hiden_size=8", r"'model\.net\.rnn\.hiden_size'.*did you mean 'hidden_size'"),
        ("+data.batchsize=8", r"'data\.batchsize'.*did you mean 'batch_size'"),
        ("model.net.rnn.bidirectional=sometimes", r"'model\.net\.rnn\.bidirectional'.*bool"),
        ("callbacks.early_stopping.patience=soon", r"'callbacks\.early_stopping\.patience'"),
    ],
)
def test_wrong_key_or_type_fails_before_training(override: str, match: str, tmp_path: Path) -> None:
    cfg = compose_config("train", ["+experiment=ucr_lstm", override], tmp_path)
    with pytest.raises(ConfigError, match=match):
        train(cfg)
    assert not (tmp_path / "checkpoints").exists()


def test_unknown_key_without_plus_is_refused_by_hydra(tmp_path: Path) -> None:
    with pytest.raises(ConfigCompositionException, match=r"trainer\.max_epoch"):
        compose_config("train", ["trainer.max_epoch=3"], tmp_path)


def test_instantiation_errors_name_the_node(tmp_path: Path) -> None:
    cfg = compose_config("train", ["+experiment=ucr_lstm", "model.net.pooling=avg"], tmp_path)
    with pytest.raises(ConfigError, match=r"(?s)config 'model'.*full_key: model.net"):
        train(cfg)
    cfg = compose_config("train", ["+experiment=ucr_lstm", "data.name=NoSuchSet"], tmp_path)
    with pytest.raises(ConfigError, match=r"(?s)config 'data'.*NoSuchSet"):
        train(cfg)
