"""Settings derived from the data: a datamodule's ``recipe()`` fills the keys a config leaves ``null``.

A recipe is a dict of dotted config keys (``"data.batch_size"``, ``"trainer.max_epochs"``,
``"model.net.frontend"`` ...) to values derived from the dataset once it is read. :func:`apply_recipe`
writes each into the run's config only where the config holds ``null`` there, so any value given in an
experiment file or on the command line wins, and the filled config (saved as the run's ``config.yaml``)
stays the record of what ran.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)

# UCR/UEA recipe constants (see ucr_recipe).
MIN_VAL_FRACTION = 0.2  # share of each class held out for validation ...
MAX_VAL_FRACTION = 0.5  # ... raised up to this so that the smallest class has one validation series
MIN_VAL_SERIES = 10  # a validation part smaller than this is noise: train on every series instead
TARGET_STEPS = 2000  # optimizer steps a run aims at (max_epochs = TARGET_STEPS / steps per epoch)
EPOCH_RANGE = (60, 1000)
RECURRENT_STEPS = 128  # longer series are downsampled to about this many steps for the recurrent layers
FULL_RATE_MIN_STRIDE = 5  # from this downsampling on, the first convolution reads every input step
# Epochs and patience end a run; the wall-clock cap is only a safety net (a hung or pathologically slow run), so
# results do not depend on machine load. Measured on 2 shared CPU cores (load 6-12), an optimizer step of the
# recipe's model took 0.4-2.8 s (ArrowHead at batch 4, PLAID at batch 32, ACSF1 at batch 16 with 1460 steps).
SAFETY_SECONDS_PER_STEP = 10  # trainer.max_time: this many seconds per optimizer step of the derived run


def format_duration(seconds: float) -> str:
    """``seconds`` as Lightning's ``DD:HH:MM:SS`` (whole seconds, rounded down)."""
    total = max(0, int(seconds))
    days, rest = divmod(total, 86400)
    return f"{days:02d}:{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"


def ucr_val_fraction(class_counts: Sequence[int]) -> float:
    """Validation share: 0.2, raised (to at most 0.5) until the smallest class puts one series in it; ``0.0``
    (validate on the training series, see :func:`ucr_recipe`) when that share gives fewer than
    ``MIN_VAL_SERIES`` validation series in all.

    With per-class rounding (``round(f * n_c)``) every class of two or more series then has at least one
    validation and one training series.
    """
    smallest = min(class_counts)
    fraction = min(MAX_VAL_FRACTION, max(MIN_VAL_FRACTION, 1.0 / smallest))
    if sum(math.floor(fraction * n + 0.5) for n in class_counts) < MIN_VAL_SERIES:
        return 0.0
    return fraction


def ucr_batch_size(n_fit: int) -> int:
    """A power of two near a fifth of the training series, in [4, 32]: at least ~5 steps per epoch."""
    return int(min(32, max(4, 2 ** math.floor(math.log2(max(n_fit / 5, 1))))))


def ucr_recipe(n_fit: int, batch_size: int, max_length: int, held_out: bool = True) -> dict[str, Any]:
    """Trainer and model settings for a UCR/UEA set of ``n_fit`` training series up to ``max_length`` steps.

    - ``trainer.max_epochs``: ``TARGET_STEPS`` optimizer steps at ``batch_size``, within ``EPOCH_RANGE``;
    - ``callbacks.early_stopping.patience``: a quarter of that (small validation sets are noisy); with no
      held-out validation (``held_out=False``: validation runs on the training series) early stopping would
      only stop a fit that has converged, so patience is ``max_epochs`` (the run trains all its epochs and
      the checkpoint with the lowest training loss is tested, as Fawaz et al. 2019 select their models);
    - ``trainer.max_time``: a wall-clock safety net, not a budget: ``SAFETY_SECONDS_PER_STEP`` seconds per
      optimizer step of the derived run (``DD:HH:MM:SS``; 3-25 times what a step took on 2 shared CPU cores),
      so a normal run ends by its epochs or early stopping and its result does not depend on machine load;
    - ``model.net.frontend``: an FCN-shaped convolutional front end for series of any length (in 6 of 6 runs of
      ItalyPowerDemand and JapaneseVowels, 24 and 7-29 steps, it gave a lower best validation loss than the
      GRU alone), downsampling by ``ceil(max_length / RECURRENT_STEPS)`` (1 for short series); from a downsampling of
      ``FULL_RATE_MIN_STRIDE`` on, its first convolution runs at the input rate before a max pooling
      (``full_rate: 1``), so features shorter than the stride are not averaged away.
    """
    steps_per_epoch = math.ceil(n_fit / batch_size)
    epochs = min(EPOCH_RANGE[1], max(EPOCH_RANGE[0], math.ceil(TARGET_STEPS / steps_per_epoch)))
    stride = math.ceil(max_length / RECURRENT_STEPS)
    frontend: dict[str, Any] = {"channels": [128, 256, 128], "kernel_sizes": [8, 5, 3], "stride": stride}
    if stride >= FULL_RATE_MIN_STRIDE:
        frontend["full_rate"] = 1
    return {
        "trainer.max_epochs": epochs,
        "trainer.max_time": format_duration(epochs * steps_per_epoch * SAFETY_SECONDS_PER_STEP),
        "callbacks.early_stopping.patience": max(20, epochs // 4) if held_out else epochs,
        "model.net.frontend": frontend,
    }


def apply_recipe(cfg: DictConfig, recipe: dict[str, Any]) -> dict[str, Any]:
    """Write each ``recipe`` value into ``cfg`` where the key exists and holds ``null``; log and return those.

    Keys the config does not have (a group left out) or holds a value for (``model.net.frontend=false``) are
    left alone: what the user or the experiment file set always wins.
    """
    applied: dict[str, Any] = {}
    for key, value in recipe.items():
        parent_key, _, leaf = key.rpartition(".")
        parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
        if not isinstance(parent, DictConfig) or leaf not in parent or parent[leaf] is not None:
            continue
        with open_dict(parent):
            parent[leaf] = value
        applied[key] = value
    if applied:
        log.info("Derived from the data (recipe): " + ", ".join(f"{k}={v}" for k, v in applied.items()))
    return applied


# Language-model recipe constants (see lm_recipe).
LM_HIDDEN_SIZES = (64, 128, 256, 384, 512, 768, 1024)  # the sizes the recipe chooses from, smallest first
LM_CHARS_PER_PARAM = 20  # a size is affordable when the budget trains it on this many characters per parameter
LM_BLOCK_SIZE = 128  # truncated-BPTT window (the state is carried across windows)
LM_BATCH_SIZE = 32  # parallel streams
LM_MIN_STEPS_PER_EPOCH = 16  # smaller corpora get fewer streams, then shorter windows
LM_VALIDATIONS = 10  # validations per run (the best of them is tested) ...
LM_VAL_SHARE = 0.1  # ... fewer when they would take more than this share of the training time
LM_SAFETY = 0.9  # planned steps use this share of the measured throughput (the machine is shared)
LM_RESERVE = (15.0, 0.03)  # seconds, share of the budget (the larger): kept for checkpoints and exit
LM_DROPOUT = ((2.0, 0.0), (10.0, 0.1), (50.0, 0.2), (math.inf, 0.3))  # (epochs * params per char below, dropout)


def lm_stream_shape(n_train: int) -> tuple[int, int]:
    """``(batch_size, block_size)`` for ``n_train`` training characters: 32 streams of 128-step windows, fewer
    streams (powers of two), then shorter windows (down to 8) until an epoch has ``LM_MIN_STEPS_PER_EPOCH``
    steps."""
    batch, block = LM_BATCH_SIZE, LM_BLOCK_SIZE
    while batch > 1 and n_train < batch * block * LM_MIN_STEPS_PER_EPOCH:
        batch //= 2
    while block > 8 and n_train < batch * block * LM_MIN_STEPS_PER_EPOCH:
        block //= 2
    return batch, block


def lm_dropout(epochs: float, params_per_char: float) -> float:
    """Dropout from how often the run sees each training character times the parameters per character:
    none below 2 (about one pass of a model smaller than its data), up to 0.3 (``LM_DROPOUT``)."""
    exposure = epochs * params_per_char
    return next(dropout for bound, dropout in LM_DROPOUT if exposure < bound)


def lm_plan(split_chars: dict[str, int], batch_size: int, block_size: int, seconds: float,
            measured: dict[str, float]) -> dict[str, Any]:
    """The time plan of one model size: how many steps fit into ``seconds`` of fit and test.

    ``measured`` holds the model's ``params`` and its measured ``train_chars_per_s`` (forward, backward,
    optimizer step) and ``eval_chars_per_s`` (forward only). Testing the best checkpoint takes
    ``test / eval_chars_per_s``; each validation ``val / eval_chars_per_s``; there are ``LM_VALIDATIONS`` of
    them, fewer where they would take more than ``LM_VAL_SHARE`` of the fit; the rest trains at
    ``LM_SAFETY`` of the measured speed, in a whole number of validation intervals.

    Returns ``{"fit_s", "test_s", "val_s", "validations", "val_check_interval", "max_steps", "chars_seen"}``.
    """
    test_s = split_chars["test"] / measured["eval_chars_per_s"]
    val_s = split_chars["val"] / measured["eval_chars_per_s"]
    fit_s = max(0.0, seconds - test_s)
    validations = max(1, min(LM_VALIDATIONS, math.floor(LM_VAL_SHARE * fit_s / val_s)))
    train_s = max(0.0, fit_s - validations * val_s)
    step_chars = batch_size * block_size
    steps = math.floor(LM_SAFETY * train_s * measured["train_chars_per_s"] / step_chars)
    interval = max(1, steps // validations)
    return {"fit_s": fit_s, "test_s": test_s, "val_s": val_s, "validations": validations,
            "val_check_interval": interval, "max_steps": interval * validations,
            "chars_seen": interval * validations * step_chars}


def lm_recipe(split_chars: dict[str, int], batch_size: int, block_size: int, seconds: float,
              measure: Callable[[int], dict[str, float]], hidden_size: int | None = None
              ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Model size, steps, validation cadence and training time of a character LM that ends, tested, in
    ``seconds``.

    Args:
        split_chars: characters of the ``train``/``val``/``test`` parts.
        batch_size, block_size: the stream shape (:func:`lm_stream_shape` unless the config sets them).
        seconds: what is left of the budget (``trainer.max_time`` less what the run has used, less
            ``LM_RESERVE``).
        measure: ``hidden_size -> {"params", "train_chars_per_s", "eval_chars_per_s"}`` (a timed probe,
            or the values a config stores).
        hidden_size: the size the config sets, or ``None``: the largest of ``LM_HIDDEN_SIZES`` that the plan
            trains on at least ``LM_CHARS_PER_PARAM`` characters per parameter (the smallest if none does;
            sizes are measured smallest first, up to the first that falls short).

    Returns ``(recipe, plan)``: the dotted config keys (``model.net.rnn.hidden_size``,
    ``model.net.rnn.dropout`` (:func:`lm_dropout`), ``trainer.val_check_interval``,
    ``callbacks.time_budget.duration`` (the fit's share of the budget: the fit stops then, whatever the
    steps, so a slower machine still ends in time and a faster one trains on), and
    ``model.scheduler.scheduler.total_iters`` (the learning rate decays over the planned steps, then stays
    at its floor)) and the plan of the chosen size (:func:`lm_plan`, with its ``hidden_size`` and
    ``measured`` values).
    """
    candidates = LM_HIDDEN_SIZES if hidden_size is None else (hidden_size,)
    chosen: dict[str, Any] | None = None
    for size in candidates:
        measured = measure(size)
        plan = {"hidden_size": size, "measured": measured,
                **lm_plan(split_chars, batch_size, block_size, seconds, measured)}
        affordable = plan["chars_seen"] >= LM_CHARS_PER_PARAM * measured["params"]
        if chosen is None or affordable:
            chosen = plan
        if not affordable:
            break
    assert chosen is not None
    epochs = chosen["chars_seen"] / split_chars["train"]
    recipe = {
        "data.batch_size": batch_size,
        "data.block_size": block_size,
        "model.net.rnn.hidden_size": chosen["hidden_size"],
        "model.net.rnn.dropout": lm_dropout(epochs, chosen["measured"]["params"] / split_chars["train"]),
        "trainer.val_check_interval": chosen["val_check_interval"],
        "callbacks.time_budget.duration": format_duration(chosen["fit_s"]),
        "model.scheduler.scheduler.total_iters": chosen["max_steps"],
    }
    return recipe, chosen
