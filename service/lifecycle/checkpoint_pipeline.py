"""An uploaded checkpoint's feature pipeline (its ``pipeline`` metadata), checked before it
is stored: every value predict and the ONNX export will read, of the type they read it as.
``Pipeline.from_json`` trusts what fitserve itself wrote; a file from elsewhere may hold a
string where a fill is a number, a level list that is a string, or labels that do not match
the classes, each of which would otherwise fail later, at predict, as a 500."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from service.features.pipeline import Pipeline

_KINDS = ("numeric", "boolean", "categorical")
_KEYS = {"name", "kind", "fill", "indicator", "levels", "other"}


def _number(value: Any) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value))


def _column(i: int, c: Any) -> str:
    """The column's name; ValueError naming the column and what is wrong."""
    if not isinstance(c, dict) or not isinstance(c.get("name"), str) or not c["name"]:
        raise ValueError(f"pipeline input {i} must be an object with a non-empty name")
    name = c["name"]
    where = f"pipeline input {name[:80]!r}"
    if set(c) - _KEYS:
        raise ValueError(f"{where} has unknown keys: {', '.join(sorted(set(c) - _KEYS))}")
    kind = c.get("kind")
    if kind not in _KINDS:
        raise ValueError(f"{where}: kind {str(kind)[:40]!r} is not one of {', '.join(_KINDS)}")
    for flag in ("indicator", "other"):
        if not isinstance(c.get(flag, False), bool):
            raise ValueError(f"{where}: {flag} must be true or false")
    fill = c.get("fill")
    if kind == "categorical":
        levels = c.get("levels", [])
        if (not isinstance(levels, list) or not all(isinstance(v, str) for v in levels)
                or len(set(levels)) != len(levels)):
            raise ValueError(f"{where}: levels must be a list of distinct strings")
        if fill is not None and not isinstance(fill, str):
            raise ValueError(f"{where}: the fill of a categorical column is a level (a "
                             "string) or null")
    else:
        if "levels" in c or "other" in c:
            raise ValueError(f"{where}: a {kind} column has no levels")
        if fill is not None and not _number(fill):
            raise ValueError(f"{where}: the fill of a {kind} column is a finite number or null")
    return name


def checked_pipeline(data: Any, feature_names: Sequence[str], classes: int) -> Pipeline:
    """The pipeline of a checkpoint whose model takes ``feature_names`` (its matrix's
    columns) and has ``classes`` classes (0: a regression); ValueError says what is wrong."""
    if not isinstance(data, dict) or not isinstance(data.get("inputs"), list):
        raise ValueError("the metadata 'pipeline' is not a feature pipeline: an object with "
                         "version and inputs")
    names = [_column(i, c) for i, c in enumerate(data["inputs"])]
    if len(set(names)) != len(names):
        raise ValueError("the pipeline's input names must be distinct")
    targets, labels = data.get("targets", []), data.get("labels")
    if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
        raise ValueError("the pipeline's targets must be a list of names")
    if labels is not None:
        if not classes:
            raise ValueError("the pipeline has class labels, and the model is no classifier")
        if (not isinstance(labels, list) or len(labels) != classes
                or not all(isinstance(v, str | bool) or _number(v) for v in labels)):
            raise ValueError(f"the pipeline's labels must be {classes} strings, numbers or "
                             f"booleans, one per class")
    try:
        pipeline = Pipeline.from_json(data)
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"the metadata 'pipeline' is not a feature pipeline ({e})") from None
    if pipeline.output_names != list(feature_names):
        raise ValueError(f"the feature pipeline writes {pipeline.width} columns "
                         f"({', '.join(pipeline.output_names[:6])}"
                         f"{', ...' if pipeline.width > 6 else ''}), not the checkpoint's "
                         f"{len(feature_names)} feature_names")
    return pipeline
