"""Matplotlib figures the tasks log, and :class:`PictureLogger`, which sends them to every logger that takes them.

Figures are built with the object API (``Figure``, no ``pyplot``), so they need no display, leave the
user's pyplot backend and figure list alone, and are freed when dropped; the loggers render them with Agg.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from lightning.pytorch.loggers import Logger, MLFlowLogger, TensorBoardLogger, WandbLogger
from matplotlib.figure import Figure

PICTURE_LOGGERS = (TensorBoardLogger, MLFlowLogger, WandbLogger)  # CSVLogger and others take no pictures


class PictureLogger:
    """Figures and text for every TensorBoard, MLflow and W&B logger of a run; other loggers are skipped.

    TensorBoard gets ``add_figure``/``add_text``; MLflow a PNG/text artifact ``<tag>/step_<step>.png|txt``;
    W&B a ``wandb.Image``/one-column table under ``tag``. It has the two methods of TensorBoard's
    ``SummaryWriter`` that the tasks' ``log_pictures`` call, so a ``SummaryWriter`` works there too.

    With ``folder``, every figure is also saved as ``<folder>/<tag with "/" as "_">.png``, each step
    overwriting the previous one (the folder holds the latest figure of each tag).
    """

    def __init__(self, loggers: Iterable[Logger], folder: str | Path | None = None) -> None:
        self.loggers = [logger for logger in loggers if isinstance(logger, PICTURE_LOGGERS)]
        self.folder = None if folder is None else Path(folder)

    def __bool__(self) -> bool:
        return bool(self.loggers) or self.folder is not None

    def add_figure(self, tag: str, figure: Figure, global_step: int) -> None:
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            figure.savefig(self.folder / f"{tag.replace('/', '_')}.png", dpi=100)
        for logger in self.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_figure(tag, figure, global_step=global_step, close=False)
            elif isinstance(logger, MLFlowLogger):
                logger.experiment.log_figure(logger.run_id, figure, f"{tag}/step_{global_step:06d}.png")
            elif isinstance(logger, WandbLogger):
                import wandb  # only runs that configured a WandbLogger need it

                logger.log_image(tag, images=[wandb.Image(figure)], step=global_step)

    def add_text(self, tag: str, text: str, global_step: int) -> None:
        """``text``: Markdown lines joined by ``"  \\n"`` (TensorBoard's line break); W&B gets one row per line."""
        for logger in self.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_text(tag, text, global_step=global_step)
            elif isinstance(logger, MLFlowLogger):
                logger.experiment.log_text(logger.run_id, text, f"{tag}/step_{global_step:06d}.txt")
            elif isinstance(logger, WandbLogger):
                logger.log_text(tag, columns=["text"], data=[[line] for line in text.split("  \n")], step=global_step)


def attention_figure(weights: np.ndarray, source: Sequence[str], target: Sequence[str], title: str = "") -> Figure:
    """Heat map of ``weights`` ``(T, S)``: one row per target token, one column per source token."""
    fig = Figure(figsize=(0.4 * len(source) + 2, 0.4 * len(target) + 1.5))
    ax = fig.subplots()
    image = ax.imshow(weights, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(source)), labels=list(source), rotation=90)
    ax.set_yticks(range(len(target)), labels=list(target))
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    ax.set_title(title)
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    return fig


def forecast_figure(
    history: np.ndarray,
    truth: np.ndarray,
    prediction: np.ndarray,
    lower: np.ndarray | None = None,
    upper: np.ndarray | None = None,
    title: str = "",
) -> Figure:
    """History ``(W,)``, then truth and prediction ``(H,)`` (with an interval band when given)."""
    fig = Figure(figsize=(6, 3))
    ax = fig.subplots()
    w = len(history)
    future = np.arange(w, w + len(truth))
    ax.plot(np.arange(w), history, color="black", label="history")
    ax.plot(future, truth, color="tab:green", label="truth")
    ax.plot(future, prediction, color="tab:blue", linestyle="--", label="forecast")
    if lower is not None and upper is not None:
        ax.fill_between(future, lower, upper, color="tab:blue", alpha=0.2, label="interval")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize="small")
    fig.tight_layout()
    return fig


def curves_figure(curves: Sequence[np.ndarray], labels: Sequence[str], title: str = "") -> Figure:
    """One line per generated real-valued sequence ``(T,)``."""
    fig = Figure(figsize=(6, 3))
    ax = fig.subplots()
    for curve, label in zip(curves, labels):
        ax.plot(np.arange(len(curve)), curve, label=label)
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    return fig
