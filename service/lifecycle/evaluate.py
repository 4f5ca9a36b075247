"""Scoring a model on a stored dataset: what ``POST /v1/models/{id}/evaluations`` calls.

The dataset's columns are matched to the model's inputs and outputs by name (their order may
differ; extra columns are ignored and listed), then the rows are predicted in chunks by the
same predictor that serves /predict, so the numbers are the ones predict gives. Rows that
cannot be scored (a classifier's target that is not one of its classes, a prediction that
overflows float32) are refused and counted with the reason; the rest are scored.
Blocking (disk and CPU): call it off the event loop.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.registry import get_kind
from service.data.table import Table
from service.errors import Conflict, InvalidInput, ShapeMismatch
from service.features import numeric_table, scored_data
from service.features.pipeline import FeatureError
from service.lifecycle.metrics import ClassificationMetrics, RegressionMetrics
from service.serving.predictor import LoadedModel, Prediction, Predictor
from service.store.artifacts import ArtifactStore
from service.store.metadata import MetadataStore
from service.store.tables import DatasetRow, EvaluationRow, ModelRow

CHUNK_ROWS = 1 << 16
"""Rows predicted at once: the evaluation's memory is a few chunks, whatever the dataset."""
PLOT_POINTS = 2000
"""Rows of (actual, predicted) kept for the regression figure, spread over the dataset."""
_FIRST_ROWS = 5


@dataclass
class Refusals:
    """Rows not scored, by reason: how many, and the first few row numbers (0-based)."""

    by_reason: dict[str, list[int]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, reason: str, rows: np.ndarray) -> None:
        if not len(rows):
            return
        self.counts[reason] = self.counts.get(reason, 0) + len(rows)
        first = self.by_reason.setdefault(reason, [])
        first.extend(int(r) for r in rows[: _FIRST_ROWS - len(first)])

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def public(self) -> list[dict[str, Any]]:
        return [{"reason": r, "rows": self.counts[r], "first_rows": self.by_reason[r]}
                for r in self.counts]


def _names(names: list[str], limit: int = 8) -> str:
    shown = names if len(names) <= limit else [*names[: limit - 1], "...", names[-1]]
    return ", ".join(shown)


def _who(model: ModelRow) -> str:
    return f"model {model.id}" + (f" ({model.name} v{model.version})" if model.name else "")


def match_features(model: ModelRow, dataset: DatasetRow) -> list[int]:
    """The dataset's feature columns in the model's input order (by name; a batch
    prediction needs no targets). A column the model takes and the dataset lacks is a 422
    naming it."""
    features = {n: i for i, n in enumerate(dataset.feature_names)}
    targets = set(dataset.target_names)
    for name in model.feature_names:
        if name not in features:
            where = " (it is one of the dataset's targets)" if name in targets else ""
            raise InvalidInput(
                f"the dataset {dataset.id} has no feature column {name!r}{where}, which "
                f"{_who(model)} takes as input; its inputs: {_names(model.feature_names)}; "
                f"the dataset's features: {_names(dataset.feature_names)}", field="dataset_id")
    return [features[n] for n in model.feature_names]


def match_columns(model: ModelRow, dataset: DatasetRow) -> tuple[list[int], list[int], list[str]]:
    """The dataset's feature and target columns in the model's order, and the columns it
    has beyond them. A column the model needs and the dataset lacks is a 422 naming it."""
    who = _who(model)
    features = {n: i for i, n in enumerate(dataset.feature_names)}
    targets = {n: i for i, n in enumerate(dataset.target_names)}
    match_features(model, dataset)
    for name in model.target_names:
        if name not in targets:
            where = " (it is one of the dataset's features)" if name in features else ""
            raise InvalidInput(
                f"the dataset {dataset.id} has no target column {name!r}{where}, which "
                f"{who} predicts; the dataset's targets: {_names(dataset.target_names)}",
                field="dataset_id")
    used = set(model.feature_names) | set(model.target_names)
    ignored = [n for n in [*dataset.feature_names, *dataset.target_names] if n not in used]
    return ([features[n] for n in model.feature_names],
            [targets[n] for n in model.target_names], ignored)


def _through_pipeline(model: ModelRow, loaded: LoadedModel, dataset: DatasetRow,
                      data: tuple[np.ndarray, np.ndarray] | Table
                      ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(x, y, ignored columns) of a dataset scored through the model's feature pipeline."""
    pipeline = loaded.pipeline
    if pipeline is None:
        raise InvalidInput(f"model {model.id} has no feature names to match the dataset's "
                           "columns by; evaluate it on a numeric dataset of its width",
                           field="dataset_id")
    table = data if isinstance(data, Table) else numeric_table(
        *data, dataset.feature_names, dataset.target_names)
    classify = get_kind(model.kind).task == "classification"
    try:
        x, y = scored_data(pipeline, table, list(model.target_names), classify)
    except FeatureError as e:
        raise InvalidInput(f"dataset {dataset.id} does not fit model {model.id}: {e.message}",
                           field="dataset_id") from None
    used = set(pipeline.input_names) | set(model.target_names)
    ignored = [n for n in [*table.feature_names, *table.target_names] if n not in used]
    return x, y, ignored


def _predict(model: LoadedModel, x: np.ndarray, rows: np.ndarray, refusals: Refusals
             ) -> Iterator[tuple[np.ndarray, Prediction]]:
    """Predictions of ``x`` (whose dataset row numbers are ``rows``), in pieces; a piece
    whose prediction overflows is split until the rows at fault stand alone and are refused."""
    try:
        yield np.arange(len(x)), model.infer(x)
    except ShapeMismatch:  # the columns were matched by name: a bug, not the data
        raise
    except InvalidInput:  # some prediction is not finite
        if len(x) == 1:
            refusals.add("the prediction overflows float32", rows)
            return
        half = len(x) // 2
        for part in (slice(0, half), slice(half, len(x))):
            for idx, p in _predict(model, x[part], rows[part], refusals):
                yield idx + (part.start or 0), p


def _class_labels(y: np.ndarray, classes: int, rows: np.ndarray, refusals: Refusals
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(which rows have a valid target, their class indices): one column of indices
    0..classes-1, or one-hot rows over ``classes`` columns."""
    if y.shape[1] == 1:
        col = y[:, 0].astype(np.float64)
        whole = (col == np.round(col)) & (col >= 0)
        refusals.add("the target is not a class index (0, 1, ...)", rows[~whole])
        inside = whole & (col < classes)
        refusals.add(f"the target is a class the model does not have (it has {classes}: "
                     f"0..{classes - 1})", rows[whole & ~inside])
        return inside, np.where(inside, col, 0).astype(np.int64)
    ok = ((y == 0) | (y == 1)).all(axis=1) & (y.sum(axis=1) == 1)
    refusals.add("the target row is not one-hot (exactly one 1, 0 elsewhere)", rows[~ok])
    return ok, y.argmax(axis=1).astype(np.int64)


def _subsample(n: int, limit: int = PLOT_POINTS) -> np.ndarray:
    if n <= limit:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, limit).round().astype(np.int64))


def evaluate_model(meta: MetadataStore, artifacts: ArtifactStore, predictor: Predictor,
                   model_id: str, dataset_id: str, tenant: str) -> EvaluationRow:
    """Score a model on a dataset and record the evaluation."""
    model = meta.get_model(model_id, tenant)
    dataset = meta.get_dataset(dataset_id, tenant)
    kind = get_kind(model.kind)
    classes = int((model.config or {}).get("classes", 0)) if kind.task == "classification" \
        else 0
    loaded = predictor.cached(model.id, tenant) or predictor.load(model.id, tenant)
    pipeline = loaded.pipeline
    try:
        data = artifacts.load_dataset(dataset.sha256)
    except OSError:  # the file went with a delete since the record was read
        meta.get_dataset(dataset.id, tenant)  # a 404 if the record went too
        raise Conflict(f"the data of dataset {dataset.id} cannot be read") from None
    if isinstance(data, Table) or (pipeline is not None and not pipeline.identity):
        # typed columns, or a model with a pipeline: by input name, through the pipeline
        x_all, y_all, ignored = _through_pipeline(model, loaded, dataset, data)
        feature_idx, target_idx = list(range(x_all.shape[1])), list(range(y_all.shape[1]))
    else:
        feature_idx, target_idx, ignored = match_columns(model, dataset)
        x_all, y_all = data
    if classes and len(target_idx) not in (1, classes):
        raise InvalidInput(f"model {model.id} has {classes} classes: its target is one column "
                           f"of class indices or {classes} one-hot columns, not "
                           f"{len(target_idx)}", field="dataset_id")

    refusals = Refusals()
    regression = RegressionMetrics(len(target_idx)) if not classes else None
    classification = ClassificationMetrics(classes) if classes else None
    plot_rows = _subsample(dataset.rows) if regression is not None else np.zeros(0, np.int64)
    plot: list[np.ndarray] = []
    for start in range(0, dataset.rows, CHUNK_ROWS):
        stop = min(start + CHUNK_ROWS, dataset.rows)
        rows = np.arange(start, stop)
        x = np.ascontiguousarray(x_all[start:stop][:, feature_idx], dtype=np.float32)
        y = np.asarray(y_all[start:stop][:, target_idx], dtype=np.float32)
        keep = np.ones(len(rows), bool)
        labels = None
        if classification is not None:
            keep, labels = _class_labels(y, classes, rows, refusals)
        for idx, p in _predict(loaded, x[keep], rows[keep], refusals):
            at = np.flatnonzero(keep)[idx]  # positions in this chunk
            if classification is not None:
                assert labels is not None and p.probabilities is not None
                classification.add(labels[at], p.probabilities)
            else:
                assert regression is not None
                regression.add(y[at], p.y)
                shown = np.isin(rows[at], plot_rows, assume_unique=True)
                if shown.any():
                    plot.append(np.stack([y[at][shown], p.y[shown]], axis=1))  # (m, 2, k)
    used = dataset.rows - refusals.total
    if used == 0:
        why = "; ".join(f"{r['rows']}: {r['reason']}" for r in refusals.public())
        raise InvalidInput(f"none of the {dataset.rows} rows of dataset {dataset.id} could be "
                           f"scored ({why})", field="dataset_id")
    metrics = (classification.result() if classification is not None
               else regression.result(model.target_names) if regression is not None else {})
    points = (np.concatenate(plot).astype("<f4").tobytes() if plot else None)
    return meta.add_evaluation(
        tenant=tenant, model_id=model.id, dataset_id=dataset.id, task=kind.task,
        rows=dataset.rows, rows_used=used, refused=refusals.public(), ignored_columns=ignored,
        metrics=metrics, plot_points=points,
    )

