"""Settings derived from the data (seqforge/data/recipes.py): the rules, the front end, and a real run where
derived values land in config.yaml / metrics.json while explicit overrides are kept."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from test_data_real import write_ts

from seqforge.data import UCRDataModule
from seqforge.data.recipes import apply_recipe, ucr_batch_size, ucr_recipe, ucr_val_fraction
from seqforge.models import SequenceClassifier
from seqforge.models.frontends import ConvFrontEnd
from seqforge.train import train
from seqforge.utils.config import compose_config, instantiate_node


def test_batch_size_and_validation_share_follow_the_training_set() -> None:
    assert [ucr_batch_size(n) for n in (3, 30, 40, 54, 80, 160, 500)] == [4, 4, 8, 8, 16, 32, 32]
    assert ucr_val_fraction([30, 40]) == 0.2  # JapaneseVowels-like: the usual share
    assert ucr_val_fraction([4, 40]) == 0.25  # raised so that the class of 4 gives one validation series
    assert ucr_val_fraction([2, 30]) == 0.5  # never more than half
    assert ucr_val_fraction([12, 12, 12]) == 0.0  # 6 validation series would be noise: none held out


def test_epochs_patience_and_front_end_follow_size_and_length() -> None:
    short = ucr_recipe(n_fit=216, batch_size=32, max_length=29)  # JapaneseVowels: 7 steps per epoch
    assert short == {"trainer.max_epochs": 286, "trainer.max_time": "00:05:33:40",  # 10 s per step of 2002
                     "callbacks.early_stopping.patience": 71,
                     "model.net.frontend": {"channels": [128, 256, 128], "kernel_sizes": [8, 5, 3], "stride": 1}}
    gunpoint = ucr_recipe(n_fit=40, batch_size=8, max_length=150)
    assert gunpoint["trainer.max_epochs"] == 400 and gunpoint["callbacks.early_stopping.patience"] == 100
    assert gunpoint["model.net.frontend"]["stride"] == 2
    assert "full_rate" not in gunpoint["model.net.frontend"]  # a stride of 2 averages the input
    acsf1 = ucr_recipe(n_fit=80, batch_size=16, max_length=1460)
    assert acsf1["model.net.frontend"]["stride"] == 12 and acsf1["model.net.frontend"]["full_rate"] == 1
    assert acsf1["trainer.max_time"] == "00:05:33:20"  # 400 epochs of 5 steps: the cap follows the steps, not the
    assert ucr_recipe(n_fit=428, batch_size=32, max_length=1344)["trainer.max_time"] == "00:05:33:40"  # length
    assert ucr_recipe(n_fit=3, batch_size=4, max_length=10)["trainer.max_time"] == "00:02:46:40"  # 1000 epochs x 1
    assert ucr_recipe(n_fit=400, batch_size=4, max_length=10)["trainer.max_time"] == "00:16:40:00"  # 60 x 100 steps
    tiny = ucr_recipe(n_fit=36, batch_size=4, max_length=251, held_out=False)  # ArrowHead: validation = train
    assert tiny["callbacks.early_stopping.patience"] == tiny["trainer.max_epochs"] == 223
    assert ucr_recipe(n_fit=100_000, batch_size=32, max_length=10)["trainer.max_epochs"] == 60  # lower bound


def test_derived_split_keeps_every_class_in_train_and_validation(tmp_path: Path) -> None:
    labels = ["a"] * 3 + ["b"] * 3 + ["c"] * 40  # classes of 3: 0.2 would give them no validation series
    rows = [",".join(["1.0"] * 5) + ":" + ",".join(["2.0"] * 5) + f":{c}" for c in labels]
    write_ts(tmp_path / "Tiny_TRAIN.ts", rows)
    write_ts(tmp_path / "Tiny_TEST.ts", rows[:6])
    dm = UCRDataModule("Tiny", path=tmp_path, batch_size=None, val_fraction=None)
    dm.setup()
    assert dm.val_fraction == pytest.approx(1 / 3)
    for split in ("train", "val"):
        assert sorted({int(y) for _, y in dm.splits[split]}) == [0, 1, 2]
    assert dm.batch_size == 4  # 31 training series
    assert dm.recipe()["data.batch_size"] == 4 and dm.recipe()["model.net.frontend"]["stride"] == 1  # 5 steps


def test_front_end_downsamples_valid_steps_and_ignores_padding() -> None:
    torch.manual_seed(0)
    net = ConvFrontEnd(2, channels=[4, 3], kernel_sizes=[4, 3], stride=3).double().eval()
    for norm in net.norms:  # non-trivial running statistics, so eval mode is batch-independent but not identity
        norm.running_mean.uniform_(-0.5, 0.5)
        norm.running_var.uniform_(0.5, 2.0)
    x = torch.randn(3, 10, 2, dtype=torch.float64)
    lengths = torch.tensor([10, 7, 2])
    x[1, 7:] = 0.0
    x[2, 2:] = 0.0
    x.requires_grad_(True)
    out, new_lengths = net(x, lengths)
    assert out.shape == (3, 4, 3) and new_lengths is not None
    assert new_lengths.tolist() == [4, 3, 1]  # ceil(lengths / 3)
    (out * torch.linspace(-1, 1, out.numel(), dtype=torch.float64).view_as(out)).sum().backward()
    assert x.grad is not None
    for b, n in enumerate(lengths.tolist()):  # each sequence alone, unpadded: the same outputs and gradients
        alone = x[b : b + 1, :n].detach().clone().requires_grad_(True)
        ref, _ = net(alone, torch.tensor([n]))
        m = int(new_lengths[b])
        torch.testing.assert_close(out[b, :m], ref[0, :m], rtol=1e-12, atol=1e-12)
        assert torch.all(out[b, m:] == 0)
        weight = torch.linspace(-1, 1, out.numel(), dtype=torch.float64).view_as(out)[b : b + 1, :m]
        (ref[:, :m] * weight).sum().backward()
        torch.testing.assert_close(x.grad[b, :n], alone.grad[0], rtol=1e-12, atol=1e-12)
        assert torch.all(x.grad[b, n:] == 0)
    # the downsampling is the mean of each run of 3 valid steps (last run: of the steps left)
    series = x[1, :7].detach().numpy()
    means = np.stack([series[0:3].mean(0), series[3:6].mean(0), series[6:7].mean(0)])
    first = torch.nn.functional.conv1d(
        torch.nn.functional.pad(torch.from_numpy(means).T.unsqueeze(0), (1, 2)), net.convs[0].weight, net.convs[0].bias
    )
    manual = torch.relu(net.norms[0](first))[0].T  # (3, 4)
    h = torch.nn.functional.pad(manual.T.unsqueeze(0), (1, 1))
    second = torch.relu(net.norms[1](net.convs[1](h)))[0].T
    torch.testing.assert_close(out[1, :3].detach(), second.detach(), rtol=1e-12, atol=1e-12)


def test_full_rate_front_end_convolves_every_step_then_max_pools_valid_runs() -> None:
    torch.manual_seed(0)
    net = ConvFrontEnd(2, channels=[4, 3], kernel_sizes=[4, 3], stride=3, full_rate=1).double().eval()
    for norm in net.norms:
        norm.running_mean.uniform_(-0.5, 0.5)
        norm.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 10, 2, dtype=torch.float64)
    x[1, 7:] = 0.0
    lengths = torch.tensor([10, 7])
    out, new_lengths = net(x, lengths)
    assert out.shape == (2, 4, 3) and new_lengths is not None and new_lengths.tolist() == [4, 3]
    alone, _ = net(x[1:, :7], torch.tensor([7]))
    torch.testing.assert_close(out[1, :3], alone[0], rtol=1e-12, atol=1e-12)  # padding changes nothing
    assert torch.all(out[1, 3:] == 0)
    first = torch.nn.functional.conv1d(torch.nn.functional.pad(x[1:, :7].transpose(1, 2), (1, 2)),
                                       net.convs[0].weight, net.convs[0].bias)  # fmt: skip
    full = torch.relu(net.norms[0](first))[0]  # (4, 7): every input step
    pooled = torch.stack([full[:, 0:3].amax(1), full[:, 3:6].amax(1), full[:, 6:7].amax(1)], dim=1)  # (4, 3)
    second = torch.relu(net.norms[1](net.convs[1](torch.nn.functional.pad(pooled.unsqueeze(0), (1, 1)))))[0].T
    torch.testing.assert_close(out[1, :3], second, rtol=1e-12, atol=1e-12)


def test_validation_on_the_training_series_when_nothing_is_held_out(tmp_path: Path) -> None:
    rows = [",".join(f"{v:.1f}" for v in np.arange(6) * (1 + i % 2)) + f":{'ab'[i % 2]}" for i in range(12)]
    write_ts(tmp_path / "Small_TRAIN.ts", rows, dims=1)
    write_ts(tmp_path / "Small_TEST.ts", rows[:4], dims=1)
    dm = UCRDataModule("Small", path=tmp_path, batch_size=None, val_fraction=None)
    dm.setup()
    assert dm.val_fraction == 0.0  # 0.2 of 6 + 6 series: 2 validation series, too few to mean anything
    assert len(dm.splits["train"]) == 12 and len(dm.splits["val"]) == 12
    for (x, y), (vx, vy) in zip(dm.splits["train"], dm.splits["val"]):
        assert torch.equal(x, vx) and torch.equal(y, vy)
    recipe = dm.recipe()
    assert recipe["data.val_fraction"] == 0.0
    assert recipe["callbacks.early_stopping.patience"] == recipe["trainer.max_epochs"]  # no early stop on train


def test_front_end_bad_arguments_name_the_parameter() -> None:
    with pytest.raises(ValueError, match="stride must be a positive int, got 0"):
        ConvFrontEnd(2, stride=0)
    with pytest.raises(ValueError, match="channels and kernel_sizes must be non-empty lists of equal length"):
        ConvFrontEnd(2, channels=[8, 8], kernel_sizes=[3])
    with pytest.raises(ValueError, match=r"full_rate must be an int in \[0, 2\] \(the number of convolutions\), got 3"):
        ConvFrontEnd(2, channels=[8, 8], kernel_sizes=[3, 3], full_rate=3)
    with pytest.raises(ValueError, match="frontend needs float features"):
        SequenceClassifier(num_classes=2, vocab_size=10, frontend={"channels": [4], "kernel_sizes": [3]})


def test_apply_recipe_fills_only_null_keys(tmp_path: Path) -> None:
    overrides = ["+experiment=ucr_auto", "data.name=GunPoint", "data.batch_size=5", "trainer.max_epochs=7",
                 "model.net.frontend=false"]
    cfg = compose_config("train", overrides, tmp_path)
    dm = instantiate_node("data", cfg.data)
    dm.setup()
    applied = apply_recipe(cfg, dm.recipe())
    assert applied == {"data.val_fraction": 0.2, "callbacks.early_stopping.patience": 62,  # 8 steps: 250 epochs
                       "trainer.max_time": "00:05:33:20"}  # 250 epochs x 8 steps x 10 s
    assert cfg.data.batch_size == 5 and dm.batch_size == 5 and cfg.trainer.max_epochs == 7
    assert cfg.model.net.frontend is False  # turned off by the user: not derived
    assert instantiate_node("model", cfg.model, net=dm.net_kwargs).net.frontend is None
    assert cfg.callbacks.early_stopping.patience == 62 and cfg.data.val_fraction == 0.2


def test_user_wall_clock_cap_wins_over_the_safety_net(tmp_path: Path) -> None:
    cfg = compose_config("train", ["+experiment=ucr_auto", "data.name=GunPoint", "trainer.max_time=00:00:10:00"],
                         tmp_path)
    dm = instantiate_node("data", cfg.data)
    dm.setup()
    applied = apply_recipe(cfg, dm.recipe())
    assert "trainer.max_time" not in applied and cfg.trainer.max_time == "00:00:10:00"
    assert applied["trainer.max_epochs"] == 400  # the budget itself is still derived, in epochs


def test_run_records_derived_settings_and_keeps_overrides(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(60):  # 3 classes, 80 steps: long enough for the front end; 12 validation series
        t = np.arange(80)
        value = np.sin(t / (3 + i % 3)) + 0.1 * rng.normal(size=80)
        rows.append(",".join(f"{v:.3f}" for v in value) + f":{'abc'[i % 3]}")
    write_ts(tmp_path / "Wave_TRAIN.ts", rows, dims=1)
    write_ts(tmp_path / "Wave_TEST.ts", rows[:6], dims=1)
    overrides = ["+experiment=ucr_auto", "data.name=Wave", f"data.path={tmp_path}", "data.batch_size=5",
                 "trainer.max_epochs=2", "trainer.accelerator=cpu", "trainer.limit_val_batches=1",
                 "callbacks.rich_progress_bar=null", "extras.print_config=false", "model.net.rnn.hidden_size=8"]
    run = tmp_path / "run"
    metrics = train(compose_config("train", overrides, run))
    saved = OmegaConf.load(run / "config.yaml")
    assert saved.data.batch_size == 5 and saved.trainer.max_epochs == 2  # the user's values won
    assert saved.data.val_fraction == 0.2
    assert saved.callbacks.early_stopping.patience == 50  # 48 series at batch 5: 200 epochs
    assert OmegaConf.to_container(saved.model.net.frontend) == {
        "channels": [128, 256, 128], "kernel_sizes": [8, 5, 3], "stride": 1}
    recorded = json.loads((run / "metrics.json").read_text())
    assert recorded["recipe"] == metrics["recipe"]
    assert set(recorded["recipe"]) == {"data.val_fraction", "callbacks.early_stopping.patience", "model.net.frontend",
                                       "trainer.max_time"}
    assert 0.0 <= recorded["test/acc"] <= 1.0
    assert recorded["stopped"]["reason"] == "max_epochs"  # the derived wall-clock safety net did not end it
