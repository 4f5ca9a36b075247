"""A tabular model's feature pipeline (service/features/pipeline.py) as ONNX nodes: the raw
columns in, one graph input each, named as the column; the model's matrix out, the one
``Pipeline.fields`` writes for a predict call. Column by column, in the pipeline's order:

    numeric, boolean (float32 (N,), NaN = missing):
        IsNaN -> Where(missing, fill, value)           [, Cast(missing) as <name>_missing]
    categorical (string (N,), "" = missing):
        LabelEncoder(level -> its column, "" -> -1, any other -> "other" or no column)
        -> Where(missing, the fill level's column) -> OneHot(levels [+ other])
                                                       [, Cast(missing) as <name>_missing]
    Concat(axis 1) -> (N, width), then the model as for a matrix (onnx_export.py)

A value predict refuses (a missing cell of a model trained with ``impute: none``) comes out
as NaN rather than as an error: a graph has no way to refuse a row. An unseen level goes to
the "other" column when the pipeline has one, else to no column (all zeros), as predict does.
``ai.onnx.ml``'s LabelEncoder does the string lookup (onnxruntime has it); the standard
``Equal`` takes strings only from opset 19, which fewer runtimes read.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import numpy as np

from service.features.pipeline import InputColumn, Pipeline
from service.lifecycle.onnx_graph import Graph, NotExportable

ML_DOMAIN = "ai.onnx.ml"
ML_OPSET = 3  # the ai.onnx.ml opset that goes with ONNX opset 17
MISSING_TEXT = ""
"""A categorical input's missing cell (a string tensor has no NaN)."""
_MISSING_CODE = -1  # LabelEncoder's code for MISSING_TEXT; OneHot never sees it


def pipeline_inputs(g: Graph, pipeline: Pipeline, outputs: Collection[str]
                    ) -> tuple[str, list[Any]]:
    """The nodes from the raw columns to the model's matrix: its value's name (N, width),
    and the graph inputs (one per column). Raises NotExportable naming a column the graph
    cannot take."""
    from onnx import TensorProto

    inputs, parts = [], []
    for col in pipeline.inputs:
        if col.name in outputs:
            raise NotExportable(f"the column {col.name!r} would be an ONNX input named as the "
                                f"output {col.name!r}; rename the column and train again",
                                field=f"inputs.{col.name}")
        if col.kind == "categorical":
            parts += _categorical(g, col)
            inputs.append(g.helper.make_tensor_value_info(col.name, TensorProto.STRING, ["N"]))
        else:
            parts += _number(g, col)
            inputs.append(g.helper.make_tensor_value_info(col.name, TensorProto.FLOAT, ["N"]))
    if len(parts) == 1:
        return parts[0], inputs
    return g.op("Concat", parts, "matrix", axis=1), inputs  # (N, width)


def _column(g: Graph, value: str) -> str:
    return g.op("Unsqueeze", [value, g.const("axis1", np.array([1], np.int64))], "column")


def _indicator(g: Graph, missing: str) -> str:
    from onnx import TensorProto

    return g.op("Cast", [missing], "missing_indicator", to=TensorProto.FLOAT)  # (N, 1) 0/1


def _number(g: Graph, col: InputColumn) -> list[str]:
    """The value (the fill where it is NaN), then its indicator; without a fill NaN stays."""
    value = _column(g, col.name)  # (N,) -> (N, 1)
    if col.fill is None and not col.indicator:
        return [value]
    missing = g.op("IsNaN", [value], "missing")
    out = value
    if col.fill is not None:  # np.float32(fill), as predict writes it
        fill = g.const("fill", np.array([np.float32(col.fill)], np.float32))
        out = g.op("Where", [missing, fill, value], "filled")
    return [out, _indicator(g, missing)] if col.indicator else [out]


def _categorical(g: Graph, col: InputColumn) -> list[str]:
    """One-hot over the levels (then "other"), the fill level where the cell is missing;
    then the indicator."""
    if MISSING_TEXT in col.levels:
        raise NotExportable(f"the column {col.name!r} has the empty string as a level, which "
                            "the ONNX graph reads as a missing cell", field=f"inputs.{col.name}")
    levels = len(col.levels)
    depth = levels + int(col.other)
    no_column = depth  # outside OneHot's [-depth, depth - 1]: a row of zeros
    codes = g.op("LabelEncoder", [col.name], "codes", domain=ML_DOMAIN,
                 keys_strings=[*col.levels, MISSING_TEXT],
                 values_int64s=[*range(levels), _MISSING_CODE],
                 default_int64=levels if col.other else no_column)  # (N,) int64
    missing = g.op("Equal", [codes, g.const("missing_code", np.array(_MISSING_CODE, np.int64))],
                   "missing")
    fill = no_column
    if col.fill is not None:
        position = int(col.positions([str(col.fill)])[0])  # predict's _filled_position
        fill = position if position >= 0 else no_column
    filled = g.op("Where", [missing, g.const("fill", np.array(fill, np.int64)), codes],
                  "filled")
    column_missing = _column(g, missing) if col.indicator or col.fill is None else ""
    parts = []
    if depth:
        parts.append(g.op("OneHot", [filled, g.const("depth", np.array([depth], np.int64)),
                                     g.const("off_on", np.array([0.0, 1.0], np.float32))],
                          "onehot", axis=-1))  # (N,) -> (N, depth)
    if col.indicator:
        parts.append(_indicator(g, column_missing))
    if col.fill is None and parts:  # predict refuses the row: NaN here
        nan = g.const("nan", np.array([np.nan], np.float32))
        parts[0] = g.op("Where", [column_missing, nan, parts[0]], "refused")
    return parts
