"""The feature pipeline as ONNX nodes (service/lifecycle/onnx_pipeline.py) against
``Pipeline.fields``, the matrix predict builds, column by column: imputed and refused cells,
indicators, levels, "other", a fill level that was pooled, a column with no level at all."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from service.features.pipeline import FeatureError, InputColumn, Pipeline
from service.lifecycle.onnx_graph import Graph, NotExportable
from service.lifecycle.onnx_pipeline import ML_DOMAIN, ML_OPSET, pipeline_inputs

ort = pytest.importorskip("onnxruntime")

COLUMNS = {
    "numeric, mean and indicator": InputColumn("a", "numeric", 2.5, True),
    "numeric, no fill": InputColumn("a", "numeric"),
    "boolean, filled": InputColumn("a", "boolean", 0.25),
    "levels and other": InputColumn("c", "categorical", "u", True, ("u", "v"), True),
    "levels, no other": InputColumn("c", "categorical", "v", False, ("u", "v")),
    "fill pooled into other": InputColumn("c", "categorical", "w", False, ("u",), True),
    "fill with no column": InputColumn("c", "categorical", "w", True, ("u",)),
    "refused, with other": InputColumn("c", "categorical", None, False, ("u", "v"), True),
    "no level, an indicator": InputColumn("c", "categorical", None, True),
}
CELLS: dict[str, list[Any]] = {
    "numeric": [1.0, None, -3.5, 0.0, None],
    "boolean": [1.0, 0.0, None, 1.0, None],
    "categorical": ["u", "v", None, "w", "never seen"],
}


def _graph(pipeline: Pipeline) -> Any:
    import onnx
    from onnx import TensorProto, helper

    g = Graph(reserved=[*pipeline.input_names, "m"])
    matrix, inputs = pipeline_inputs(g, pipeline, ["m"])
    g.rename(matrix, "m")
    out = helper.make_tensor_value_info("m", TensorProto.FLOAT, ["N", pipeline.width])
    graph = helper.make_graph(g.nodes, "pipeline", inputs, [out], initializer=g.constants)
    model = helper.make_model(graph, ir_version=8, opset_imports=[
        helper.make_opsetid("", 17), helper.make_opsetid(ML_DOMAIN, ML_OPSET)])
    onnx.checker.check_model(model, full_check=True)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _expected(pipeline: Pipeline, name: str, cells: list[Any]) -> np.ndarray:
    """predict's matrix row by row; NaN for a row it refuses."""
    rows = []
    for v in cells:
        try:
            rows.append(pipeline.fields({name: [v]}, 1)[0])
        except FeatureError:
            rows.append(np.full(pipeline.width, np.nan, np.float32))
    return np.array(rows, np.float32).reshape(len(cells), pipeline.width)


@pytest.mark.parametrize("case", list(COLUMNS))
def test_each_column_writes_what_predict_writes(case):
    col = COLUMNS[case]
    pipeline = Pipeline((col,))
    cells = CELLS[col.kind]
    feed = (np.array(["" if v is None else v for v in cells], object)
            if col.kind == "categorical"
            else np.array([np.nan if v is None else v for v in cells], np.float32))
    (got,) = _graph(pipeline).run(None, {col.name: feed})
    want = _expected(pipeline, col.name, cells)
    assert got.shape == want.shape == (len(cells), col.width())
    refused = np.isnan(want).any(axis=1)
    assert np.isnan(got[refused]).any(axis=1).all(), (got, want)  # NaN where predict refuses
    np.testing.assert_array_equal(got[~refused], want[~refused])


def test_columns_are_concatenated_in_the_pipelines_order():
    pipeline = Pipeline((InputColumn("c", "categorical", "u", True, ("u", "v"), True),
                         InputColumn("a", "numeric", 2.5, True),
                         InputColumn("b", "boolean", 0.5)))
    session = _graph(pipeline)
    assert [i.name for i in session.get_inputs()] == ["c", "a", "b"]
    (got,) = session.run(None, {"c": np.array(["v", "", "x"], object),
                                "a": np.array([1.0, np.nan, 3.0], np.float32),
                                "b": np.array([np.nan, 1.0, 0.0], np.float32)})
    want = pipeline.fields({"c": ["v", None, "x"], "a": [1.0, None, 3.0],
                            "b": [None, True, False]}, 3)
    np.testing.assert_array_equal(got, want)


def test_what_the_graph_cannot_take_names_the_column():
    with pytest.raises(NotExportable) as e:
        _graph(Pipeline((InputColumn("m", "numeric"),)))  # the output's name
    assert e.value.field == "inputs.m"
    with pytest.raises(NotExportable) as e:
        _graph(Pipeline((InputColumn("c", "categorical", None, False, ("", "u")),)))
    assert e.value.field == "inputs.c" and "empty string" in e.value.message
