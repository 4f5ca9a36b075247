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

Inputs and outputs are named as predict's JSON: ``x`` (float32, N x in_features) in;
``y`` out (a classifier's label as a float column), and for classifiers ``labels`` (int64)
and ``probabilities``. A part ONNX (or this builder) cannot express is a 422 naming it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from models.defaults import MLP_ACTIVATION, MLP_HIDDEN, POLYNOMIAL_DEGREE
from service.errors import InvalidInput
from service.lifecycle.checkpoints import expected_shapes
from service.store.tables import ModelRow

OPSET = 17
IR_VERSION = 8  # what ONNX 1.13+ runtimes read (onnxruntime since 1.14)
_ACTIVATIONS = {"relu": "Relu", "tanh": "Tanh"}


class NotExportable(InvalidInput):
    """A part of the model that the ONNX graph cannot express."""

    type = "not_exportable"


class _Graph:
    """Nodes and constants, with fresh names."""

    def __init__(self) -> None:
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes: list[Any] = []
        self.constants: list[Any] = []
        self._count = 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, hint: str, value: np.ndarray) -> str:
        name = self.name(hint)
        self.constants.append(self.numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str, **attrs: Any) -> str:
        out = self.name(hint)
        self.nodes.append(self.helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def rename(self, value: str, name: str) -> None:
        """Give a final value the output's name."""
        self.nodes.append(self.helper.make_node("Identity", [value], [name]))


def _f32(values: Any) -> np.ndarray:
    return np.asarray(values, np.float32)


def _linear(g: _Graph, z: str, tensors: Mapping[str, np.ndarray], prefix: str) -> str:
    """``z @ W.T + b`` as one Gemm."""
    inputs = [z, g.const(f"{prefix}.weight", _f32(tensors[f"{prefix}.weight"]))]
    if f"{prefix}.bias" in tensors:
        inputs.append(g.const(f"{prefix}.bias", _f32(tensors[f"{prefix}.bias"])))
    return g.op("Gemm", inputs, prefix.replace(".", "_"), transB=1)  # (N, a) -> (N, b)


def _polynomial_terms(g: _Graph, x: str, features: int, config: Mapping[str, Any]) -> str:
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


def _head(g: _Graph, row: ModelRow, z: str, tensors: Mapping[str, np.ndarray],
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


def export_onnx(row: ModelRow, tensors: Mapping[str, np.ndarray]) -> bytes:
    """The serialized ONNX model of ``row`` from its checkpoint's tensors (verified before)."""
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
    g = _Graph()
    n_in = row.in_features
    z = "x"
    norm = row.normalization or {}
    if norm.get("x_mean") is not None:  # (x - mean) / std, in float32 as predict does
        z = g.op("Sub", [z, g.const("x_mean", _f32(norm["x_mean"]))], "centred")
        z = g.op("Div", [z, g.const("x_std", _f32(norm["x_std"]))], "scaled")
    if row.kind == "polynomial":
        z = _polynomial_terms(g, z, n_in, config)
    out = _head(g, row, z, tensors, config)
    outputs = []
    classes = int(config.get("classes", 0)) if row.kind == "logistic" else 0
    if classes:
        if row.out_features == 1:  # one logit: P(1) = sigmoid(z), P(0) = 1 - P(1)
            p1 = g.op("Sigmoid", [out], "p1")
            p0 = g.op("Sub", [g.const("one", np.ones((1, 1), np.float32)), p1], "p0")
            probs = g.op("Concat", [p0, p1], "probs", axis=1)
        else:
            probs = g.op("Softmax", [out], "probs", axis=1)
        labels = g.op("ArgMax", [probs], "labels", axis=1, keepdims=0)  # first of ties
        column = g.op("Unsqueeze", [labels, g.const("axis1", np.array([1], np.int64))], "col")
        g.rename(g.op("Cast", [column], "label_f", to=TensorProto.FLOAT), "y")
        g.rename(labels, "labels")
        g.rename(probs, "probabilities")
        outputs = [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1]),
            helper.make_tensor_value_info("labels", TensorProto.INT64, ["N"]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", classes]),
        ]
    else:
        if norm.get("y_mean") is not None:  # y' * std + mean: the targets' own units
            out = g.op("Mul", [out, g.const("y_std", _f32(norm["y_std"]))], "unscaled")
            out = g.op("Add", [out, g.const("y_mean", _f32(norm["y_mean"]))], "y_units")
        g.rename(out, "y")
        outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                 ["N", row.out_features])]
    graph = helper.make_graph(
        g.nodes, f"fitserve_{row.kind}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", n_in])], outputs,
        initializer=g.constants,
    )
    model = helper.make_model(
        graph, producer_name="fitserve", ir_version=IR_VERSION,
        opset_imports=[helper.make_opsetid("", OPSET)],
        doc_string=f"fitserve model {row.id} ({row.kind}); input x: "
        f"{', '.join(row.feature_names)}",
    )
    if row.version is not None:
        model.model_version = int(row.version)
    helper.set_model_props(model, {
        "fitserve.model_id": row.id, "fitserve.name": row.name or "",
        "fitserve.kind": row.kind, "fitserve.feature_names": json.dumps(row.feature_names),
        "fitserve.target_names": json.dumps(row.target_names),
    })
    onnx.checker.check_model(model, full_check=True)
    return bytes(model.SerializeToString())
