"""What the ONNX exporter (onnx_export.py, onnx_pipeline.py) builds with: a graph of nodes
and constants with fresh names, and the 422 for what a graph cannot express."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from service.errors import InvalidInput


class NotExportable(InvalidInput):
    """A part of the model that the ONNX graph cannot express."""

    type = "not_exportable"


def f32(values: Any) -> np.ndarray:
    return np.asarray(values, np.float32)


class Graph:
    """Nodes and constants, with fresh names that never take one of ``reserved`` (the
    graph's inputs and outputs: a tabular model's inputs are named as its columns)."""

    def __init__(self, reserved: Iterable[str] = ()) -> None:
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes: list[Any] = []
        self.constants: list[Any] = []
        self._reserved = set(reserved)
        self._count = 0

    def name(self, hint: str) -> str:
        while True:
            self._count += 1
            name = f"{hint}_{self._count}"
            if name not in self._reserved:
                return name

    def const(self, hint: str, value: np.ndarray) -> str:
        name = self.name(hint)
        # an object array of str is a string tensor
        self.constants.append(self.numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str, domain: str = "",
           **attrs: Any) -> str:
        out = self.name(hint)
        self.nodes.append(self.helper.make_node(op_type, inputs, [out], domain=domain or None,
                                                **attrs))
        return out

    def rename(self, value: str, name: str) -> None:
        """Give a final value the output's name."""
        self.nodes.append(self.helper.make_node("Identity", [value], [name]))
