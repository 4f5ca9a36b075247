"""The infer request's short float lists (read with one numpy call) give the numbers and
errors of the general read."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from service.errors import ServiceError
from service.serving import protocol

DATA: list[Any] = [
    [3.3], [1.5, -2.25, 0.1], [-0.0], [5e-324], [1e-46], [3.4028235e38], [3.4028235677973366e38],
    [3.4028235677973362e38], [1e39], [-1e39], [1e308], [1.0, 2], [1, 2], [True], [None], ["a"],
    [[1.0]], [1.0] * 16, [1.0] * 17, [], [0.1 * i for i in range(16)],
]


def _read(data: list[Any], shape: list[int], datatype: str) -> tuple[Any, ...]:
    body = orjson.dumps({"inputs": [{"name": "x", "shape": shape, "datatype": datatype,
                                     "data": data}]})
    try:
        req = protocol.parse_infer_request(body, None)
    except ServiceError as e:
        return type(e).__name__, e.message
    return req.data.dtype, req.data.shape, req.data.tobytes(), req.shape


@pytest.mark.parametrize("data", DATA, ids=range(len(DATA)))
@pytest.mark.parametrize("datatype", ["FP32", "FP64"])
@pytest.mark.parametrize("extra", [0, 1])  # a count that matches, and one that does not
def test_few_floats_read_as_the_general_path_reads_them(monkeypatch, data, datatype, extra):
    shape = [len(data) + extra, 1]
    fast = _read(data, shape, datatype)
    monkeypatch.setattr(protocol, "_FEW", 0)  # every list the general way
    assert fast == _read(data, shape, datatype)


def test_the_few_floats_path_is_taken():
    req = protocol.parse_infer_request(orjson.dumps({"inputs": [
        {"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1.5, 3.4028235e38]}]}), None)
    assert protocol._few_floats([1.5, 3.4028235e38], 2, np.dtype("<f4"))
    assert req.data.tobytes() == np.array([1.5, 3.4028235e38], np.float32).tobytes()
    assert not protocol._few_floats([1e39], 1, np.dtype("<f4"))
    assert protocol._few_floats([1e39], 1, np.dtype("<f8"))
