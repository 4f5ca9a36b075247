"""A fitted model as an ONNX graph: ``GET /v1/models/{id}/export?format=onnx``.

The graph is built node by node with ``onnx.helper`` from the checkpoint's own tensors (the
ones predict serves), not traced with ``torch.onnx``: torch 2.13's exporter is the
``torch.export`` one, which needs the onnxscript package and seconds of tracing per model,
and its TorchScript predecessor is deprecated; every kind here is a handful of standard
operators, and building them directly keeps torch out of the API process and the graph
exactly the computation predict does:

    x -> (x - x_mean) / x_std            standardize (when the model was trained with it)
      -> powers, pairwise products       polynomial terms
      -> Gemm [-> Relu | Tanh -> Gemm]*  the linear layer, or the mlp's layers
      -> y * y_std + y_mean              regression targets back in their units
      -> Sigmoid | Softmax, ArgMax       classifiers: probabilities, labels

Inputs and outputs are named as predict's JSON: ``x`` (float32, N x in_features) in, or
for a model trained on typed columns one input per column, named as the column, with the
feature pipeline in front of the graph above (onnx_pipeline.py); ``y`` out (a classifier's
label as a float column), and for classifiers ``labels`` (int64), ``probabilities`` and, for
one trained on labels, ``label`` (the label as text). A part ONNX (or this builder) cannot
express is a 422 naming it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from models.defaults import MLP_ACTIVATION, MLP_HIDDEN, POLYNOMIAL_DEGREE
from service.errors import ModelUnavailable
from service.features.pipeline import Pipeline, label_text
from service.lifecycle.checkpoints import expected_shapes
from service.lifecycle.onnx_graph import Graph, NotExportable, f32
from service.lifecycle.onnx_pipeline import MISSING_TEXT, ML_DOMAIN, ML_OPSET, pipeline_inputs
from service.store.tables import ModelRow

__all__ = ["NotExportable", "export_checkpoint", "export_onnx"]

OPSET = 17
IR_VERSION = 8  # what ONNX 1.13+ runtimes read (onnxruntime since 1.14)
_ACTIVATIONS = {"relu": "Relu", "tanh": "Tanh"}


def _linear(g: Graph, z: str, tensors: Mapping[str, np.ndarray], prefix: str) -> str:
    """``z @ W.T + b`` as one Gemm."""
    inputs = [z, g.const(f"{prefix}.weight", f32(tensors[f"{prefix}.weight"]))]
    if f"{prefix}.bias" in tensors:
        inputs.append(g.const(f"{prefix}.bias", f32(tensors[f"{prefix}.bias"])))
    return g.op("Gemm", inputs, prefix.replace(".", "_"), transB=1)  # (N, a) -> (N, b)


def _polynomial_terms(g: Graph, x: str, features: int, config: Mapping[str, Any]) -> str:
    """models/polynomial.py's transform: x_f^1..x_f^d feature-major, then x_i * x_j (i < j)."""
    degree = int(config.get("degree", POLYNOMIAL_DEGREE))
    cube = g.op("Unsqueeze", [x, g.const("axis2", np.array([2], np.int64))], "x3")  # (N, F, 1)
    powers = g.const("exponents", np.arange(1, degree + 1, dtype=np.float32)[None, None, :])
    stacked = g.op("Pow", [cube, powers], "powers")  # (N, F, d)
    flat = g.op("Reshape", [stacked, g.const("terms_shape",
                                             np.array([-1, features * degree], np.int64))],
                "terms")  # (N, F * d)
    if not config.get("interactions") or features < 2:
        return flat
    i, j = np.triu_indices(features, k=1)  # torch.triu_indices(F, F, offset=1)'s order
    left = g.op("Gather", [x, g.const("pairs_i", i.astype(np.int64))], "left", axis=1)
    right = g.op("Gather", [x, g.const("pairs_j", j.astype(np.int64))], "right", axis=1)
    products = g.op("Mul", [left, right], "products")  # (N, F(F-1)/2)
    return g.op("Concat", [flat, products], "terms_all", axis=1)


def _head(g: Graph, row: ModelRow, z: str, tensors: Mapping[str, np.ndarray],
          config: Mapping[str, Any]) -> str:
    if row.kind in ("linear", "logistic", "polynomial"):
        return _linear(g, z, tensors, "linear")
    if row.kind == "mlp":
        activation = str(config.get("activation", MLP_ACTIVATION))
        if activation not in _ACTIVATIONS:
            raise NotExportable(f"the mlp's activation {activation!r} has no ONNX operator "
                                f"here (exported: {', '.join(_ACTIVATIONS)})", field="model")
        layers = len(config.get("hidden", MLP_HIDDEN)) + 1
        for i in range(layers):
            z = _linear(g, z, tensors, f"layers.{2 * i}")
            if i < layers - 1:
                z = g.op(_ACTIVATIONS[activation], [z], activation)
        return z
    raise NotExportable(f"the {row.kind} kind has no ONNX graph (exported kinds: linear, "
                        "logistic, polynomial, mlp)", field="model")


def export_checkpoint(row: ModelRow, blob: bytes) -> bytes:
    """The ONNX model of ``row`` from its checkpoint file (verified by sha256 before): its
    tensors, and the feature pipeline stored with them when it was trained on columns."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    from service.store.tabular import safetensors_metadata

    try:
        tensors = load(blob)
        stored = safetensors_metadata(blob).get("pipeline")
    except SafetensorError:
        raise ModelUnavailable(f"the checkpoint of model {row.id!r} is unreadable") from None
    pipeline = None
    if stored is not None:
        try:
            pipeline = Pipeline.from_json(json.loads(stored))
        except (ValueError, KeyError, TypeError) as e:
            raise ModelUnavailable(f"the feature pipeline of model {row.id!r} is unreadable "
                                   f"({e})") from None
    return export_onnx(row, tensors, pipeline)


def export_onnx(row: ModelRow, tensors: Mapping[str, np.ndarray],
                pipeline: Pipeline | None = None) -> bytes:
    """The serialized ONNX model of ``row`` from its checkpoint's tensors (verified before);
    with a (non-identity) feature pipeline, its inputs are the raw columns."""
    try:
        import onnx
    except ImportError:  # the server extra has it; a trimmed install may not
        raise NotExportable("ONNX export needs the onnx package on the server "
                            "(pip install 'fitserve[server]')", field="format") from None
    from onnx import TensorProto, helper

    config = {"in_features": row.in_features, "out_features": row.out_features,
              **(row.config or {})}
    if row.kind not in ("linear", "logistic", "polynomial", "mlp"):
        raise NotExportable(f"the {row.kind} kind has no ONNX graph (exported kinds: linear, "
                            "logistic, polynomial, mlp)", field="model")
    expected = expected_shapes(row.kind, config)
    if {k: tuple(v.shape) for k, v in tensors.items()} != expected:
        raise NotExportable(f"the checkpoint's tensors do not fit its {row.kind} config",
                            field="model")
    classes = int(config.get("classes", 0)) if row.kind == "logistic" else 0
    columns = pipeline is not None and not pipeline.identity
    labels = pipeline.labels if pipeline is not None and classes else None
    if labels is not None and len(labels) != classes:
        raise NotExportable(f"the model has {classes} classes and {len(labels)} labels",
                            field="model")
    names = (["y", "labels", "probabilities", *(["label"] if labels is not None else [])]
             if classes else ["y"])
    g = Graph(reserved=[*names, *(pipeline.input_names if columns and pipeline else ["x"])])
    n_in = row.in_features
    if columns and pipeline is not None:
        if pipeline.width != n_in:
            raise NotExportable(f"the feature pipeline writes {pipeline.width} columns; the "
                                f"model takes {n_in}", field="model")
        z, inputs = pipeline_inputs(g, pipeline, names)
    else:
        z, inputs = "x", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", n_in])]
    norm = row.normalization or {}
    if norm.get("x_mean") is not None:  # (x - mean) / std, in float32 as predict does
        z = g.op("Sub", [z, g.const("x_mean", f32(norm["x_mean"]))], "centred")
        z = g.op("Div", [z, g.const("x_std", f32(norm["x_std"]))], "scaled")
    if row.kind == "polynomial":
        z = _polynomial_terms(g, z, n_in, config)
    out = _head(g, row, z, tensors, config)
    if classes:
        outputs = _classifier_outputs(g, out, row.out_features, classes, labels)
    else:
        if norm.get("y_mean") is not None:  # y' * std + mean: the targets' own units
            out = g.op("Mul", [out, g.const("y_std", f32(norm["y_std"]))], "unscaled")
            out = g.op("Add", [out, g.const("y_mean", f32(norm["y_mean"]))], "y_units")
        g.rename(out, "y")
        outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                 ["N", row.out_features])]
    graph = helper.make_graph(g.nodes, f"fitserve_{row.kind}", inputs, outputs,
                              initializer=g.constants)
    opsets = [helper.make_opsetid("", OPSET)]
    if any(n.domain == ML_DOMAIN for n in g.nodes):
        opsets.append(helper.make_opsetid(ML_DOMAIN, ML_OPSET))
    model = helper.make_model(graph, producer_name="fitserve", ir_version=IR_VERSION,
                              opset_imports=opsets, doc_string=_doc(row, pipeline, columns))
    if row.version is not None:
        model.model_version = int(row.version)
    props = {"fitserve.model_id": row.id, "fitserve.name": row.name or "",
             "fitserve.kind": row.kind, "fitserve.feature_names": json.dumps(row.feature_names),
             "fitserve.target_names": json.dumps(row.target_names)}
    if columns and pipeline is not None:
        props["fitserve.inputs"] = json.dumps([c.public() for c in pipeline.inputs])
    helper.set_model_props(model, props)
    onnx.checker.check_model(model, full_check=True)
    return bytes(model.SerializeToString())


def _classifier_outputs(g: Graph, out: str, n_out: int, classes: int,
                        labels: tuple[object, ...] | None) -> list[Any]:
    """Probabilities, each row's class index (``labels``) and as a float column (``y``);
    a classifier trained on labels also gives each row's label as text (``label``, as
    /v2's output of that name and the keys of predict's probabilities)."""
    from onnx import TensorProto, helper

    if n_out == 1:  # one logit: P(1) = sigmoid(z), P(0) = 1 - P(1)
        p1 = g.op("Sigmoid", [out], "p1")
        p0 = g.op("Sub", [g.const("one", np.ones((1, 1), np.float32)), p1], "p0")
        probs = g.op("Concat", [p0, p1], "probs", axis=1)
    else:
        probs = g.op("Softmax", [out], "probs", axis=1)
    index = g.op("ArgMax", [probs], "labels", axis=1, keepdims=0)  # first of ties
    column = g.op("Unsqueeze", [index, g.const("axis1", np.array([1], np.int64))], "col")
    g.rename(g.op("Cast", [column], "label_f", to=TensorProto.FLOAT), "y")
    g.rename(index, "labels")
    g.rename(probs, "probabilities")
    outputs = [
        helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1]),
        helper.make_tensor_value_info("labels", TensorProto.INT64, ["N"]),
        helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", classes]),
    ]
    if labels is not None:
        texts = g.const("label_texts", np.array([label_text(v) for v in labels], object))
        g.rename(g.op("Gather", [texts, index], "label", axis=0), "label")
        outputs.append(helper.make_tensor_value_info("label", TensorProto.STRING, ["N"]))
    return outputs


def _doc(row: ModelRow, pipeline: Pipeline | None, columns: bool) -> str:
    head = f"fitserve model {row.id} ({row.kind}); "
    if not columns or pipeline is None:
        return head + f"input x: {', '.join(row.feature_names)}"
    kinds = ", ".join(f"{c.name} ({'string' if c.kind == 'categorical' else 'float'})"
                      for c in pipeline.inputs)
    return (head + f"one input per column, each of shape (N,): {kinds}; a missing cell is "
            f"NaN, or {MISSING_TEXT!r} in a string column")
