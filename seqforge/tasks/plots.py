"""Matplotlib figures the tasks log to TensorBoard.

Figures are built with the object API (``Figure``, no ``pyplot``), so they need no display, leave the
user's pyplot backend and figure list alone, and are freed when dropped; TensorBoard renders them with Agg.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure


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
