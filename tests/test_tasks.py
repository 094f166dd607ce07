"""Every task trains with a real Lightning Trainer on a small learnable task and its loss falls."""

from __future__ import annotations

import functools
import logging
import math

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from seqforge.data.synthetic import (
    AddingProblemDataModule,
    CharStreamDataModule,
    ConditionalPatternDataModule,
    EchoTaggingDataModule,
    ParityDataModule,
    ReverseDataModule,
    SineForecastDataModule,
)
from seqforge.models import (
    ConditionalGenerator,
    Forecaster,
    LanguageModel,
    Seq2Seq,
    SequenceClassifier,
    SequenceTagger,
)
from seqforge.tasks import (
    ClassificationTask,
    ForecastingTask,
    GenerationTask,
    LanguageModelTask,
    RegressionTask,
    Seq2SeqTask,
    TaggingTask,
)
from seqforge.tasks.callbacks import LengthCurriculum
from seqforge.tasks.seq2seq import teacher_forcing_ratio

logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
ADAM = functools.partial(torch.optim.Adam, lr=1e-2)


def trainer(steps: int, logger=False, **kwargs) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu", max_steps=steps, logger=logger, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, log_every_n_steps=1, **kwargs,
    )  # fmt: skip


def fit_and_compare(task, dm, steps: int, **kwargs) -> tuple[dict, dict]:
    """Validation metrics before and after ``steps`` training steps."""
    t = trainer(steps, **kwargs)
    before = t.validate(task, datamodule=dm, verbose=False)[0]
    t.fit(task, datamodule=dm)
    after = t.validate(task, datamodule=dm, verbose=False)[0]
    return before, after


def build(dm, net_cls, **net_kwargs):
    torch.manual_seed(0)
    dm.setup()
    return net_cls(**dm.net_kwargs, **net_kwargs)


def test_classification_learns_short_parity():
    dm = ParityDataModule(min_len=1, max_len=3, num_train=256, num_val=64, num_test=8)
    net = build(dm, SequenceClassifier, rnn={"hidden_size": 16, "cell": "gru"}, embedding_dim=8)
    task = ClassificationTask(net, ADAM, label_smoothing=0.05)
    before, after = fit_and_compare(task, dm, 60)
    assert after["val/loss"] < 0.5 * before["val/loss"]
    assert after["val/acc"] > 0.95 and after["val/f1"] > 0.95
    assert ClassificationTask.monitor == "val/acc" and ClassificationTask.monitor_mode == "max"


def test_regression_loss_falls_on_short_adding_problem():
    dm = AddingProblemDataModule(seq_len=6, num_train=512, num_val=64, num_test=8)
    task = RegressionTask(build(dm, SequenceClassifier, rnn={"hidden_size": 16, "cell": "gru"}), ADAM)
    before, after = fit_and_compare(task, dm, 60)
    assert after["val/mse"] < 0.25 * before["val/mse"]
    assert after["val/rmse"] == pytest.approx(math.sqrt(after["val/mse"]), rel=1e-4)
    assert after["val/mse_best"] <= after["val/mse"] + 1e-6


def test_tagging_learns_to_echo_and_ignores_padding():
    dm = EchoTaggingDataModule(num_symbols=4, num_train=256, num_val=64, num_test=8)
    net = build(dm, SequenceTagger, rnn={"hidden_size": 16, "bidirectional": False, "cell": "gru"}, embedding_dim=8)
    task = TaggingTask(net, ADAM)
    before, after = fit_and_compare(task, dm, 40)
    assert after["val/loss"] < 0.5 * before["val/loss"] and after["val/acc"] > 0.7
    x, lengths, y = next(iter(dm.val_dataloader()))
    y_changed = y.clone()
    assert (y == -100).any()
    out = task.model_step((x, lengths, y_changed))
    assert out["target"].numel() == y.numel() and torch.equal(out["target"], y.reshape(-1))


def test_seq2seq_reverse_loss_falls_and_decodes():
    dm = ReverseDataModule(num_symbols=4, min_len=2, max_len=4, num_train=512, num_val=32, num_test=8)
    task = Seq2SeqTask(build(dm, Seq2Seq, rnn={"hidden_size": 24, "cell": "gru"}, embedding_dim=8), ADAM,
                       teacher_forcing="linear", teacher_forcing_end=0.8, teacher_forcing_steps=60)  # fmt: skip
    before, after = fit_and_compare(task, dm, 50)
    assert after["val/loss"] < 0.2 * before["val/loss"]
    assert after["val/exact_match"] > 0.5 > before["val/exact_match"]
    assert after["val/cer"] < before["val/cer"]


@pytest.mark.slow
def test_seq2seq_reverse_reaches_99_percent_exact_match():
    dm = ReverseDataModule(num_symbols=6, min_len=2, max_len=6, num_train=2000, num_val=200, num_test=200)
    net = build(dm, Seq2Seq, rnn={"hidden_size": 48, "cell": "lstm"}, embedding_dim=16, attention="additive")
    task = Seq2SeqTask(net, functools.partial(torch.optim.Adam, lr=5e-3), beam_size=3)
    t = trainer(1200, val_check_interval=200, check_val_every_n_epoch=None)
    t.fit(task, datamodule=dm)
    result = t.test(task, datamodule=dm, verbose=False)[0]
    assert result["test/exact_match"] >= 0.99


def test_generator_produces_class_specific_sequences():
    dm = ConditionalPatternDataModule(num_symbols=5, min_len=2, num_train=256, num_val=32, num_test=8)
    net = build(dm, ConditionalGenerator, rnn={"hidden_size": 16, "cell": "gru"}, embedding_dim=8)
    task = GenerationTask(net, ADAM)
    before, after = fit_and_compare(task, dm, 60)
    assert after["val/loss"] < 0.1 * before["val/loss"]
    tokens, lengths = task.net.eval().generate(torch.arange(3), max_len=10)
    for c in range(3):
        assert tokens[c, : int(lengths[c])].tolist() == dm.pattern(c)[1:].tolist()


def test_real_valued_generation_loss_falls():
    dm = ConditionalPatternDataModule(output="real", seq_len=12, num_train=128, num_val=32, num_test=8)
    net = build(dm, ConditionalGenerator, rnn={"hidden_size": 16, "cell": "gru"}, output_head="gaussian")
    before, after = fit_and_compare(GenerationTask(net, ADAM), dm, 40)
    assert after["val/mse"] < 0.5 * before["val/mse"]


def test_language_model_carries_state_and_perplexity_falls():
    dm = CharStreamDataModule(num_chars=6000, block_size=16, batch_size=8)
    task = LanguageModelTask(build(dm, LanguageModel, rnn={"hidden_size": 24, "cell": "gru"}, embedding_dim=16), ADAM,
                             gradient_clip_val=1.0)  # fmt: skip
    before, after = fit_and_compare(task, dm, 40)
    assert after["val/ppl"] < 0.3 * before["val/ppl"]
    assert after["val/bpc"] == pytest.approx(math.log2(after["val/ppl"]), rel=1e-4)
    state = task.states["train"]
    assert state is not None and not state.requires_grad and state.shape == (1, 8, 24)
    tested = trainer(1).test(task, datamodule=dm, verbose=False)[0]
    assert tested["test/bpc"] == pytest.approx(math.log2(tested["test/ppl"]), rel=1e-4)


def test_language_model_clips_gradients_itself():
    dm = CharStreamDataModule(num_chars=2000, block_size=8, batch_size=4)
    task = LanguageModelTask(build(dm, LanguageModel, rnn={"hidden_size": 8}, embedding_dim=8),
                             functools.partial(torch.optim.SGD, lr=1.0), gradient_clip_val=1e-3)  # fmt: skip
    start = torch.cat([p.detach().flatten().clone() for p in task.parameters()])
    trainer(1, limit_val_batches=0).fit(task, datamodule=dm)
    moved = torch.cat([p.detach().flatten() for p in task.parameters()]) - start
    assert 0 < float(moved.norm()) <= 1e-3 * 1.001


def test_forecasting_metrics_are_in_original_units():
    dm = SineForecastDataModule(window=12, horizon=3, length=300)
    task = ForecastingTask(build(dm, Forecaster, rnn={"hidden_size": 16, "cell": "gru"}), ADAM)
    before, after = fit_and_compare(task, dm, 40)
    assert after["val/mae"] < 0.7 * before["val/mae"]
    history = torch.stack([h for h, _ in dm.splits["val"]])
    target = torch.stack([t for _, t in dm.splits["val"]])
    with torch.no_grad():
        pred = task.net.eval().point(task.net(history))
    mae = (dm.scaler.inverse_transform(pred) - dm.scaler.inverse_transform(target)).abs().mean()
    assert after["val/mae"] == pytest.approx(float(mae), rel=1e-4)
    assert after["val/mase"] == pytest.approx(float(mae) / dm.mase_scale, rel=1e-4)


@pytest.mark.parametrize("head", ["gaussian", "quantile"])
def test_probabilistic_forecast_losses_fall(head):
    dm = SineForecastDataModule(window=12, horizon=3, length=300)
    net = build(dm, Forecaster, rnn={"hidden_size": 16, "cell": "gru"}, head=head, strategy="autoregressive")
    before, after = fit_and_compare(ForecastingTask(net, ADAM), dm, 30)
    assert after["val/loss"] < before["val/loss"]


def _tags(log_dir) -> set[str]:
    tags = set()
    for events in log_dir.rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events), size_guidance={"images": 0, "tensors": 0})
        acc.Reload()
        found = acc.Tags()
        tags |= set(found["images"]) | set(found["tensors"])
    return tags


def test_pictures_and_samples_go_to_tensorboard(tmp_path):
    cases = [
        (ReverseDataModule(num_symbols=4, max_len=4, num_train=16, num_val=8, num_test=8, batch_size=8), Seq2Seq,
         Seq2SeqTask, {"rnn": {"hidden_size": 8}, "embedding_dim": 4}, "val/attention_0"),
        (SineForecastDataModule(window=8, horizon=2, length=200), Forecaster, ForecastingTask,
         {"rnn": {"hidden_size": 8}, "head": "gaussian"}, "val/forecast_0"),
        (ConditionalPatternDataModule(num_train=16, num_val=8, num_test=8, batch_size=8), ConditionalGenerator,
         GenerationTask, {"rnn": {"hidden_size": 8}}, "val/samples/text_summary"),
        (CharStreamDataModule(num_chars=2000, block_size=8, batch_size=4), LanguageModel, LanguageModelTask,
         {"rnn": {"hidden_size": 8}, "embedding_dim": 8}, "val/samples/text_summary"),
    ]  # fmt: skip
    for i, (dm, net_cls, task_cls, net_kwargs, tag) in enumerate(cases):
        logger = TensorBoardLogger(tmp_path / str(i), name="run")
        task = task_cls(build(dm, net_cls, **net_kwargs), ADAM)
        trainer(2, logger=logger, limit_train_batches=2, limit_val_batches=1, val_check_interval=2).fit(
            task, datamodule=dm
        )
        assert tag in _tags(tmp_path / str(i)), task_cls.__name__


def test_scheduler_as_partial_or_dict():
    net = SequenceClassifier(num_classes=2, input_size=1, rnn={"hidden_size": 4})
    step_lr = functools.partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5)
    config = ClassificationTask(net, ADAM, step_lr).configure_optimizers()
    assert config["lr_scheduler"]["monitor"] == "val/acc" and config["lr_scheduler"]["interval"] == "epoch"
    dm = ParityDataModule(num_train=64, num_val=8, num_test=8, batch_size=16)
    dm.setup()
    task = ClassificationTask(SequenceClassifier(**dm.net_kwargs, rnn={"hidden_size": 4}, embedding_dim=4), ADAM,
                              {"scheduler": step_lr, "interval": "step"})  # fmt: skip
    trainer(3, limit_val_batches=0).fit(task, datamodule=dm)
    assert task.optimizers().param_groups[0]["lr"] == pytest.approx(1e-2 * 0.5**3)
    with pytest.raises(ValueError, match="a scheduler dict needs a 'scheduler' partial"):
        ClassificationTask(net, ADAM, {"interval": "step"}).configure_optimizers()


def test_teacher_forcing_schedules():
    assert teacher_forcing_ratio("constant", 500, 0.7, 0.0, 100) == 0.7
    assert teacher_forcing_ratio("linear", 0, 1.0, 0.2, 100) == 1.0
    assert teacher_forcing_ratio("linear", 50, 1.0, 0.2, 100) == pytest.approx(0.6)
    assert teacher_forcing_ratio("linear", 500, 1.0, 0.2, 100) == 0.2
    values = [teacher_forcing_ratio("inverse_sigmoid", s, 1.0, 0.0, 50) for s in (0, 200, 400, 10**6)]
    assert values[0] == pytest.approx(50 / 51) and values == sorted(values, reverse=True) and values[-1] < 1e-6
    with pytest.raises(ValueError, match="schedule must be one of"):
        teacher_forcing_ratio("cosine", 0, 1.0, 0.0, 10)


def test_bad_batches_give_clear_errors():
    net = SequenceClassifier(num_classes=2, input_size=1, rnn={"hidden_size": 4})
    task = ClassificationTask(net, ADAM)
    x, lengths = torch.randn(3, 4, 1), torch.tensor([4, 2, 1])
    with pytest.raises(ValueError, match=r"ClassificationTask: expected a batch \(x, lengths, y\), got 2 items"):
        task.model_step((x, lengths))
    with pytest.raises(ValueError, match="num_classes=2; does the data's label set match the model"):
        task.model_step((x, lengths, torch.tensor([0, 1, 5])))
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, 4\]"):
        task.model_step((x, torch.tensor([4, 9, 1]), torch.tensor([0, 1, 1])))
    reg = RegressionTask(SequenceClassifier(output_size=2, input_size=1, rnn={"hidden_size": 4}), ADAM)
    with pytest.raises(ValueError, match=r"RegressionTask: net returned \(3, 2\) but targets are \(3,\)"):
        reg.model_step((x, lengths, torch.randn(3)))
    s2s = Seq2SeqTask(Seq2Seq(8, 6, rnn={"hidden_size": 4}, embedding_dim=4), ADAM)
    src = torch.randint(4, 8, (2, 3))
    with pytest.raises(ValueError, match=r"tgt_in ids must lie in \[0, 6\) \(vocab_size=6\)"):
        s2s.model_step((src, torch.tensor([3, 2]), torch.tensor([[1, 7, 2], [1, 4, 2]]), torch.tensor([3, 3])))
    fc = ForecastingTask(Forecaster(horizon=3, rnn={"hidden_size": 4}), ADAM)
    with pytest.raises(ValueError, match="do the datamodule's and the net's horizon match"):
        fc.model_step((torch.randn(2, 5, 1), torch.tensor([5, 5]), torch.randn(2, 4)))
    with pytest.raises(TypeError, match="optimizer must be a partial"):
        ClassificationTask(net, "adam")


def test_length_curriculum_grows_the_training_lengths():
    class RecordLengths(L.Callback):
        def __init__(self) -> None:
            self.longest: dict[int, int] = {}

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            epoch = trainer.current_epoch
            self.longest[epoch] = max(self.longest.get(epoch, 0), int(batch[1].max()))

    dm = ParityDataModule(min_len=1, max_len=8, num_train=64, num_val=8, num_test=8, batch_size=16)
    task = ClassificationTask(build(dm, SequenceClassifier, rnn={"hidden_size": 4}, embedding_dim=4), ADAM)
    record = RecordLengths()
    curriculum = LengthCurriculum(start_len=2, end_len=8, grow_epochs=3)
    t = L.Trainer(accelerator="cpu", max_epochs=4, logger=False, enable_checkpointing=False,
                  enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                  reload_dataloaders_every_n_epochs=1, callbacks=[curriculum, record])  # fmt: skip
    t.fit(task, datamodule=dm)
    assert [curriculum.length_at(e) for e in range(4)] == [2, 4, 6, 8]
    assert record.longest[0] <= 2 and record.longest[1] <= 4 and record.longest[3] == 8
    with pytest.raises(ValueError, match="reload_dataloaders_every_n_epochs=1"):
        trainer(1, callbacks=[LengthCurriculum(2, 8)]).fit(task, datamodule=dm)


def test_checkpoint_holds_plain_data_and_reloads_with_the_net(tmp_path):
    dm = ReverseDataModule(num_symbols=4, max_len=4, num_train=16, num_val=8, num_test=8, batch_size=8)
    task = Seq2SeqTask(build(dm, Seq2Seq, rnn={"hidden_size": 8}, embedding_dim=4), ADAM, teacher_forcing="linear")
    t = trainer(2, limit_val_batches=0)
    t.fit(task, datamodule=dm)
    path = tmp_path / "last.ckpt"
    t.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["hyper_parameters"]["teacher_forcing"] == "linear"
    assert "optimizer" not in checkpoint["hyper_parameters"] and "net" not in checkpoint["hyper_parameters"]
    net = Seq2Seq(**dm.net_kwargs, rnn={"hidden_size": 8}, embedding_dim=4)
    restored = Seq2SeqTask.load_from_checkpoint(path, net=net)
    src, lengths, _, _ = next(iter(dm.val_dataloader()))
    assert torch.equal(restored.net.eval().greedy(src, lengths)[0], task.net.eval().greedy(src, lengths)[0])
    with pytest.raises(ValueError, match="training needs an optimizer"):
        restored.configure_optimizers()


def test_picture_paths_for_every_head(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(tmp_path)
    dm = SineForecastDataModule(window=8, horizon=2, length=200, batch_size=4)
    for head in ("point", "quantile"):
        task = ForecastingTask(build(dm, Forecaster, rnn={"hidden_size": 4}, head=head), ADAM, num_plots=2)
        batch = next(iter(dm.val_dataloader()))
        task.keep_examples(batch, task.model_step(batch))
        task.log_pictures(writer, task.examples)
    real = ConditionalPatternDataModule(output="real", seq_len=6, num_train=8, num_val=4, num_test=4, batch_size=4)
    gen = GenerationTask(build(real, ConditionalGenerator, rnn={"hidden_size": 4}), ADAM, num_samples=2)
    batch = next(iter(real.val_dataloader()))
    gen.keep_examples(batch, gen.model_step(batch))
    gen.log_pictures(writer, gen.examples)
    writer.close()
    assert {"val/forecast_0", "val/forecast_1", "val/samples"} <= _tags(tmp_path)
