"""The predict core's body parsing: the fast read of rows gives as_matrix's answer, array or
error, and a large body's lists start no garbage collection (issue 13: the tail)."""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pytest

from service.data.arrays import as_matrix
from service.errors import ServiceError
from service.serving import matrix_bytes
from service.serving.predict import parse_predict_body, rows_matrix
from service.serving.protocol import parse_infer_request
from tests.helpers import gc_collections

ROWS: list[Any] = [
    [[1.5]], [[1.5, -2.25], [0.1, 3.0]], [[1, 2], [3, 4]], [[1, 2.5]], [[-0]], [[-0.0]],
    [[2**53 + 1]], [[2**63 - 1]], [[2**63]], [[2**64, 1.0]], [[10**400]], [[1e308 * 10]],
    [[3.5e38 * 2]], [[1e39]], [[3.4028235e38]], [[1e-46]], [[True]], [[1, False]],
    [[1, "a"]], [[1], [2, 3]], [[1, 2], [3]], [[]], [[1], []], [[None]], [[[1.0]]],
    [[1.0], 2.0], [1.0, 2.0], [], "x", [[float("nan")]], [[{"a": 1}]], [[1.0]] * 1000,
    [[i * 0.1, -i] for i in range(300)],
]


def _answer(fn: Callable[[Any], np.ndarray], x: Any) -> tuple[Any, ...]:
    try:
        out = fn(x)
    except ServiceError as e:
        return type(e).__name__, e.message, e.field
    return out.dtype, out.shape, out.tobytes()


@pytest.mark.parametrize("x", ROWS, ids=range(len(ROWS)))
def test_rows_matrix_answers_as_as_matrix_does(x):
    assert _answer(rows_matrix, x) == _answer(lambda v: as_matrix(v, "x"), x)


def test_rows_matrix_reads_random_rows_bit_for_bit():
    rng = np.random.default_rng(0)
    for _ in range(20):
        x = rng.standard_normal((50, 3)) * 10.0 ** rng.integers(-30, 30, (50, 3))
        rows = orjson.loads(orjson.dumps(x.tolist()))  # the floats a client's JSON carries
        assert _answer(rows_matrix, rows) == _answer(lambda v: as_matrix(v, "x"), rows)


def test_a_thousand_row_body_starts_no_collection(monkeypatch):
    # the plain parse, whose rows are lists (read from the bytes, they make none:
    # test_matrix_bytes.py)
    monkeypatch.setattr(matrix_bytes, "MIN_BYTES", 1 << 30)
    raw = orjson.dumps({"x": [[float(i), 1.0] for i in range(1000)]})
    infer = orjson.dumps({"inputs": [{"name": "x", "shape": [1000, 2], "datatype": "FP32",
                                      "data": [[float(i), 1.0] for i in range(1000)]}]})
    with gc_collections() as unpaused:  # the same parse, the collector left on
        for _ in range(50):
            parse_predict_body.__wrapped__(raw, "application/json", None,  # type: ignore[attr-defined]
                                           by_path=False)
    with gc_collections() as paused:
        for _ in range(50):
            parse_predict_body(raw, "application/json", None, by_path=False)
            parse_infer_request(infer, None)
    assert len(unpaused) >= 50  # 1 000 lists start one at least, each time
    assert len(paused) <= len(unpaused) // 10  # none, but for another thread's allocations
    assert gc.isenabled()


def test_the_collector_is_on_again_after_an_error_and_stays_off_if_it_was():
    with pytest.raises(ServiceError):
        parse_predict_body(b'{"x": [[1], [2, 3]]}', "application/json", None, by_path=False)
    assert gc.isenabled()
    gc.disable()
    try:
        parse_predict_body(b'{"x": [[1]]}', "application/json", None, by_path=False)
        assert not gc.isenabled()
    finally:
        gc.enable()
