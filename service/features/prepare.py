"""A Table dataset as a job trains on it: the columns it selected and typed, the pipeline
fitted on its training rows, every row as the float32 matrix, the targets as numbers (or a
classifier's class indices and labels)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.features.options import FeatureOptions
from service.features.pipeline import (
    FeatureError,
    Label,
    Pipeline,
    as_kind,
    fit_pipeline,
    label_text,
)
from service.store.tabular import Column, Table


@dataclass(frozen=True)
class Prepared:
    x: np.ndarray  # (N, pipeline.width) float32, every row
    y: np.ndarray  # (N, targets) float32; a classifier's class index per row (N, 1)
    pipeline: Pipeline


def select(table: Table, options: FeatureOptions) -> Table:
    """The feature columns the job names (all by default), retyped by its ``schema``."""
    by_name = {c.name: c for c in table.features}
    for name in options.schema:
        if name not in by_name:
            raise FeatureError(f"schema names {name!r}, which is not a feature column of the "
                               f"dataset ({', '.join(by_name)})", field="schema")
    names = list(options.features) if options.features is not None else list(by_name)
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise FeatureError(f"features names {unknown[0]!r}, which is not a feature column of "
                           f"the dataset ({', '.join(by_name)})", field="features")
    cols = [by_name[n] for n in names]
    cols = [as_kind(c, options.schema[c.name]) if c.name in options.schema else c
            for c in cols]
    return Table(cols, table.targets, table.name)


def table_targets(table: Table, classify: bool,
                  labels: tuple[Label, ...] | None = None
                  ) -> tuple[np.ndarray, tuple[Label, ...] | None]:
    """(y, labels): regression targets as float32 (N, targets); a classifier's one target
    column as class indices (N, 1) float32 and its labels in index order (given: the
    model's, and a label it does not know is refused)."""
    for col in table.targets:
        if col.missing.any():
            row = int(np.argmax(col.missing))
            raise FeatureError(f"target {col.name!r} is missing in row {row}", field="target")
    if not classify:
        for col in table.targets:
            if col.kind == "categorical":
                raise FeatureError(f"target {col.name!r} holds text ({col.categories[0]!r}): "
                                   "a regression target must be numeric; train model "
                                   "logistic to predict labels", field="target")
        return np.stack([c.values for c in table.targets], axis=1).astype(np.float32), None
    if len(table.targets) != 1:
        raise FeatureError(f"a classifier trains on one target column; the dataset has "
                           f"{len(table.targets)}", field="target")
    col = table.targets[0]
    values, found = _labels(col)
    if labels is None:
        labels = found
    index = {label_text(lv): i for i, lv in enumerate(labels)}
    try:
        lookup = np.array([index[label_text(lv)] for lv in found], np.float32)
    except KeyError:
        new = next(lv for lv in found if label_text(lv) not in index)
        raise FeatureError(f"target label {new!r} is not one the model was trained on "
                           f"({', '.join(map(str, labels))})", field="target") from None
    return lookup[values][:, None], labels


def _labels(col: Column) -> tuple[np.ndarray, tuple[Label, ...]]:
    """Per row, the index into the column's distinct labels (sorted); and those labels."""
    if col.kind == "categorical":
        present = np.unique(col.values)
        order = sorted(present.tolist(), key=lambda c: col.categories[c])
        remap = np.zeros(len(col.categories), np.int64)
        remap[order] = np.arange(len(order))
        return remap[col.values], tuple(col.categories[c] for c in order)
    levels, inverse = np.unique(col.values, return_inverse=True)
    if col.kind == "boolean":
        return inverse, tuple(bool(v) for v in levels)
    found: tuple[Label, ...] = tuple(int(v) if float(v).is_integer() else float(v)
                                     for v in levels)
    return inverse, found


def prepare_table(table: Table, options: FeatureOptions, train_rows: np.ndarray | None,
                  classify: bool) -> Prepared:
    """Select and type the columns, fit the pipeline on ``train_rows`` (None: every row),
    transform every row."""
    chosen = select(table, options)
    y, labels = table_targets(chosen, classify)
    train = chosen if train_rows is None else chosen.take(train_rows)
    pipeline = fit_pipeline(train, options)
    if labels is not None:
        pipeline = Pipeline(pipeline.inputs, pipeline.targets, labels)
    return Prepared(pipeline.transform(chosen), y, pipeline)


def numeric_table(x: np.ndarray, y: np.ndarray, feature_names: list[str],
                  target_names: list[str]) -> Table:
    """A numeric matrix dataset as a Table of numeric columns (a job that selects or
    retypes its columns trains through the pipeline)."""
    return Table([Column(n, "numeric", np.ascontiguousarray(x[:, i], np.float32))
                  for i, n in enumerate(feature_names)],
                 [Column(n, "numeric", np.ascontiguousarray(y[:, i], np.float32))
                  for i, n in enumerate(target_names)])


def scored_data(pipeline: Pipeline, table: Table, target_names: list[str], classify: bool
                ) -> tuple[np.ndarray, np.ndarray]:
    """Another dataset (or the training one) as a model scores it: x through the model's
    pipeline (by column name; a column it lacks is imputed or refused), y its targets by
    name (a labelled classifier's as the model's class indices; an unlabelled one's as
    stored). Raises FeatureError naming what does not fit."""
    by_name = {c.name: c for c in table.targets}
    absent = [n for n in target_names if n not in by_name]
    if absent:
        raise FeatureError(f"the dataset has no target column {absent[0]!r}, which the model "
                           f"predicts; its targets: {', '.join(by_name) or 'none'}",
                           field="dataset_id")
    chosen = Table(table.features, [by_name[n] for n in target_names], table.name)
    x = pipeline.transform(chosen)
    labelled = classify and pipeline.labels is not None
    y, _ = table_targets(chosen, labelled, pipeline.labels if labelled else None)
    return x, y
