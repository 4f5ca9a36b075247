"""Figures of a fit and of a loss curve, rendered to PNG with matplotlib's Agg canvas.

Figures are built with ``matplotlib.figure.Figure`` and their own Agg canvas, never pyplot:
pyplot keeps global state and a GUI backend, and these run in worker threads of the API.
Blocking (disk and CPU): call them off the event loop.
"""

from __future__ import annotations

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from models.registry import get_kind
from service.data.table import Table
from service.errors import Conflict, InvalidInput, NotFound
from service.features import numeric_table, scored_data
from service.features.pipeline import FeatureError
from service.serving.predictor import LoadedModel, Predictor
from service.store.artifacts import ArtifactStore
from service.store.metadata import MetadataStore

MAX_POINTS = 5000
"""Points drawn per series: more are subsampled evenly (a PNG shows no more anyway)."""


def _subsample(n: int, limit: int = MAX_POINTS) -> np.ndarray:
    """Indices of at most ``limit`` of ``n`` points, evenly spread, the last one included."""
    if n <= limit:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, limit).round().astype(np.int64))


def fit_figure(
    x: np.ndarray,
    y: np.ndarray,
    model: LoadedModel,
    feature_names: list[str],
    target_names: list[str],
    title: str,
) -> Figure:
    """One feature and one target: the data as red points and the fitted line or curve over
    them (the seed program's figure; a classifier's probability of each class instead).
    Otherwise predicted against actual, one series per target."""
    idx = _subsample(len(x))
    xs, ys = np.asarray(x, np.float32)[idx], np.asarray(y, np.float64)[idx]
    fig = Figure(figsize=(6.4, 4.8), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    classifier = model.classes is not None
    if xs.shape[1] == 1 and (ys.shape[1] == 1 or classifier):
        lo, hi = float(xs[:, 0].min()), float(xs[:, 0].max())
        linear = model.kind == "linear"
        grid = np.linspace(lo, hi, 2 if linear else 400, dtype=np.float32)[:, None]
        p = model.infer(grid)
        ax.set_xlabel(feature_names[0])
        if classifier:
            labels = ys.argmax(1) if ys.shape[1] > 1 else ys[:, 0]
            ax.plot(xs[:, 0], labels, "ro", label="data (class)")
            assert p.probabilities is not None
            for c in range(p.probabilities.shape[1]):
                ax.plot(grid[:, 0], p.probabilities[:, c], label=f"P(class {c})")
            ax.set_ylabel("class / probability")
        else:
            ax.plot(xs[:, 0], ys[:, 0], "ro", label="data")
            label = "fit"
            if linear:  # the line through its two ends, in the units of the data
                (x0, x1), (y0, y1) = grid[:, 0].astype(np.float64), p.y[:, 0].astype(np.float64)
                w0 = (y1 - y0) / (x1 - x0) if x1 != x0 else 0.0
                b0 = y0 - w0 * x0
                label = f"fit: y = {w0:.5g} x {'+' if b0 >= 0 else '-'} {abs(b0):.5g}"
            ax.plot(grid[:, 0], p.y[:, 0], color="tab:blue", label=label)
            ax.set_ylabel(target_names[0])
    elif classifier:  # how sure the model is of each row's true class
        p = model.infer(xs)
        assert p.probabilities is not None
        labels = (ys.argmax(1) if ys.shape[1] > 1 else ys[:, 0]).astype(np.int64)
        ax.hist(p.probabilities[np.arange(len(labels)), labels], bins=20, range=(0, 1),
                label="rows")
        ax.set_xlabel("predicted probability of the true class")
        ax.set_ylabel("rows")
    else:
        predicted = model.predict(xs).astype(np.float64)  # (N, in) -> (N, out)
        for j, name in enumerate(target_names):
            ax.plot(ys[:, j], predicted[:, j], "o", markersize=3, alpha=0.7, label=name)
        lo = float(min(ys.min(), predicted.min()))
        hi = float(max(ys.max(), predicted.max()))
        ax.plot([lo, hi], [lo, hi], color="black", linewidth=1, label="predicted = actual")
        ax.set_xlabel("actual")
        ax.set_ylabel("predicted")
    ax.set_title(title)
    ax.legend()
    return fig


def loss_figure(
    epoch: np.ndarray, loss: np.ndarray, val_loss: np.ndarray | None, title: str
) -> Figure:
    """The training loss per logged epoch on a log scale, the validation loss beside it."""
    idx = _subsample(len(epoch))
    fig = Figure(figsize=(6.4, 4.8), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    series = [("training loss", loss)] + ([("validation loss", val_loss)]
                                          if val_loss is not None else [])
    positive = False
    for label, values in series:
        v = np.asarray(values, np.float64)[idx]
        # a diverged run ends in inf or nan and an exact fit reaches 0: neither has a log
        v = np.where(np.isfinite(v) & (v > 0), v, np.nan)
        positive = positive or bool(np.isfinite(v).any())
        ax.plot(np.asarray(epoch)[idx], v, label=label)
    if positive:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    return fig


def png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def feature_figure(x: np.ndarray, y: np.ndarray, values: np.ndarray, model: LoadedModel,
                   feature: str, target_names: list[str], title: str) -> Figure:
    """The rows against one input column: the data and the model's prediction for each row
    (its other inputs as they are); a classifier's probability of each class."""
    idx = _subsample(len(x))
    xs, ys, vs = np.asarray(x, np.float32)[idx], np.asarray(y, np.float64)[idx], values[idx]
    fig = Figure(figsize=(6.4, 4.8), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    p = model.infer(xs)
    if p.probabilities is not None:
        names = (model.pipeline.labels if model.pipeline is not None
                 and model.pipeline.labels is not None else range(p.probabilities.shape[1]))
        for c, name in enumerate(names):
            ax.plot(vs, p.probabilities[:, c], "o", markersize=3, label=f"P({name})")
        ax.set_ylabel("probability")
    else:
        ax.plot(vs, ys[:, 0], "ro", markersize=3, label="data")
        ax.plot(vs, p.y[:, 0], "o", color="tab:blue", markersize=3, label="predicted")
        ax.set_ylabel(target_names[0])
    ax.set_xlabel(feature)
    ax.set_title(title)
    ax.legend()
    return fig


def model_plot_png(
    meta: MetadataStore, artifacts: ArtifactStore, predictor: Predictor, model_id: str,
    tenant: str, feature: str | None = None,
) -> bytes:
    """``feature``: a numeric input to draw the rows against (default: the fit over the
    only feature, or predicted against actual)."""
    model = meta.get_model(model_id, tenant)
    if model.dataset_id is None:  # imported from a checkpoint: no training rows
        raise Conflict(f"model {model_id!r} was imported from a checkpoint and has no "
                       "dataset to draw the fit over")
    try:
        dataset = meta.get_dataset(model.dataset_id, tenant)
        data = artifacts.load_dataset(dataset.sha256)
    except (NotFound, OSError):
        raise Conflict(
            f"the dataset {model.dataset_id!r} of model {model_id!r} was deleted; "
            "there is no data to draw the fit over"
        ) from None
    loaded = predictor.cached(model.id, tenant) or predictor.load(model.id, tenant)
    label = f"{model.name} v{model.version}" if model.name else model.id
    pipeline = loaded.pipeline
    if not isinstance(data, Table) and (pipeline is None or pipeline.identity) \
            and feature is None:
        x, y = data
        return png(fit_figure(x, y, loaded, model.feature_names, model.target_names, label))
    if pipeline is None:
        raise InvalidInput(f"model {model_id!r} has no feature names to plot against",
                           field="feature")
    table = data if isinstance(data, Table) else numeric_table(
        *data, dataset.feature_names, dataset.target_names)
    classify = get_kind(model.kind).task == "classification"
    try:
        x, y = scored_data(pipeline, table, list(model.target_names), classify)
    except FeatureError as e:
        raise Conflict(f"the dataset of model {model_id!r} no longer fits it: {e.message}"
                       ) from None
    numeric = [c.name for c in pipeline.inputs if c.kind != "categorical"]
    if feature is None:  # one input column: the fit over it; else predicted against actual
        return png(fit_figure(x, y, loaded, model.feature_names, model.target_names, label))
    if feature not in numeric:
        raise InvalidInput(f"feature {feature!r} is not a numeric input of model "
                           f"{model_id!r}; its numeric inputs: {', '.join(numeric) or 'none'}",
                           field="feature")
    column = next(c for c in table.features if c.name == feature)
    values = column.values.astype(np.float64)
    return png(feature_figure(x, y, values, loaded, feature, model.target_names, label))


def loss_plot_png(meta: MetadataStore, job_id: str, tenant: str) -> bytes:
    job = meta.get_job(job_id, tenant)
    if not job.history_loss:
        raise Conflict(
            f"job {job_id!r} is {job.status} and has no loss history yet; it is stored when "
            f"the job ends (follow /v1/jobs/{job_id}/events meanwhile)"
        )
    epoch = np.frombuffer(job.history_epoch or b"", "<i4")
    loss = np.frombuffer(job.history_loss, "<f4")
    val = None if job.history_val_loss is None else np.frombuffer(job.history_val_loss, "<f4")
    title = f"{job.id} ({job.status})"
    return png(loss_figure(epoch, loss, val, title))
