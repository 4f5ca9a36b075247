"""An evaluation's figure as PNG: predicted against actual (regression, from the points kept
with the evaluation) or the confusion matrix (classifiers). Built with matplotlib's Figure
and its own Agg canvas, never pyplot (no global state; these run in worker threads), as
serving/plots.py does. Blocking: call it off the event loop."""

from __future__ import annotations

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from service.store.tables import EvaluationRow

_ANNOTATE_UP_TO = 20
"""Classes up to which each cell of the confusion matrix shows its count."""


def _figure() -> Figure:
    fig = Figure(figsize=(6.4, 4.8), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _title(row: EvaluationRow, score: str) -> str:
    """Two lines: the ids are long (24 hex digits each)."""
    return f"{row.model_id}\non {row.dataset_id}{score}"


def _regression(row: EvaluationRow, names: list[str]) -> Figure:
    fig = _figure()
    ax = fig.add_subplot()
    k = len(names)
    points = np.frombuffer(row.plot_points or b"", "<f4").reshape(-1, 2, max(k, 1))
    actual, predicted = points[:, 0, :].astype(np.float64), points[:, 1, :].astype(np.float64)
    for j, name in enumerate(names):
        ax.plot(actual[:, j], predicted[:, j], "o", markersize=3, alpha=0.7, label=name)
    if len(points):
        lo = float(min(actual.min(), predicted.min()))
        hi = float(max(actual.max(), predicted.max()))
        ax.plot([lo, hi], [lo, hi], color="black", linewidth=1, label="predicted = actual")
    ax.set_xlabel("actual")
    ax.set_ylabel("predicted")
    r2 = row.metrics.get("r2")
    ax.set_title(_title(row, f": R² {r2:.4g}" if r2 is not None else ""), fontsize=10)
    ax.legend()
    return fig


def _confusion(row: EvaluationRow) -> Figure:
    cm = np.asarray(row.metrics["confusion_matrix"], np.int64)
    c = cm.shape[0]
    fig = _figure()
    ax = fig.add_subplot()
    image = ax.imshow(cm, cmap="Blues")
    fig.colorbar(image, ax=ax, label="rows")
    if c <= _ANNOTATE_UP_TO:
        ticks = np.arange(c)
        ax.set_xticks(ticks)
        ax.set_yticks(ticks)
        middle = cm.max() / 2 if cm.size else 0
        for i in range(c):
            for j in range(c):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                        color="white" if cm[i, j] > middle else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("actual class")
    accuracy = row.metrics.get("accuracy")
    ax.set_title(_title(row, f": accuracy {accuracy:.4g}" if accuracy is not None else ""),
                 fontsize=10)
    return fig


def evaluation_png(row: EvaluationRow) -> bytes:
    """The figure of an evaluation, as PNG bytes."""
    if row.task == "classification":
        fig = _confusion(row)
    else:
        names = [t["name"] for t in row.metrics.get("per_target", [])]
        fig = _regression(row, names)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
