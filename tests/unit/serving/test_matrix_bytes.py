"""x read from a predict body's bytes (service/serving/matrix_bytes.py) answers exactly as the
plain parse does: the same model reference and float32 rows bit for bit, or the same error,
for well-formed bodies, malformed ones and ones made to look like the fast path's."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import service.serving.predict as core
from service.errors import ServiceError
from service.serving import matrix_bytes
from service.serving.matrix_bytes import split_matrix
from tests.helpers import gc_collections


def _parse(raw: bytes, by_path: bool, max_rows: int | None, *, from_bytes: bool
           ) -> tuple[Any, ...]:
    """parse_predict_body's answer, reading x from the bytes first (any size), or never."""
    with pytest.MonkeyPatch.context() as m:
        if from_bytes:
            m.setattr(matrix_bytes, "MIN_BYTES", 0)
        else:
            m.setattr(core, "split_matrix", lambda raw: None)
        try:
            ref, x = core.parse_predict_body(raw, "application/json", "path-ref",
                                             by_path=by_path, max_rows=max_rows)
        except ServiceError as e:
            return type(e).__name__, e.status_code, e.message, e.field
    assert isinstance(x, np.ndarray)
    return ref, x.dtype, x.shape, x.tobytes()


def _agree(raw: bytes, max_rows: int | None = None) -> None:
    split = split_matrix(raw)
    if split is not None:  # what it read is what the body says, x and the rest
        rest, x = split
        body = orjson.loads(raw)
        assert {k: v for k, v in body.items() if k != "x"} == {k: v for k, v in rest.items()
                                                               if k != "x"}, raw
        assert "x" in body and "x" in rest and rest["x"] is None, raw
        assert x.tobytes() == np.asarray(body["x"], np.float64).astype(np.float32).tobytes()
    for by_path in (False, True):
        assert (_parse(raw, by_path, max_rows, from_bytes=True)
                == _parse(raw, by_path, max_rows, from_bytes=False)), raw


BODIES = [
    b'{"x":[[1.5]]}', b'{"x":[[1.5,-2.25],[0.1,3.0]]}', b'{"x":[[1,2],[3,4]]}',
    b'{"x": [[1.0, 2.0], [3.0, 4.0]]}', b'{"x":[[-0]]}', b'{"x":[[-0.0,1E5,2e-3,1.0E+2]]}',
    b'{"model":"lane","x":[[1.0]]}', b'{"x":[[1.0]],"model":"lane"}', b'{"model":"","x":[[1]]}',
    b'{"model":5,"x":[[1]]}', b'{"x":[[1]],"rows":[{"a":1}]}', b'{"x":[[1]],"zip":1}',
    b'{"x":[[9007199254740993]]}', b'{"x":[[9223372036854775807]]}',
    b'{"x":[[9223372036854775808]]}', b'{"x":[[18446744073709551615,1.0]]}',
    b'{"x":[[18446744073709551616]]}', b'{"x":[[-9223372036854775808]]}',
    b'{"x":[[1e400]]}', b'{"x":[[1e39]]}', b'{"x":[[3.4028235e38]]}', b'{"x":[[3.5e38]]}',
    b'{"x":[[1e-46]]}', b'{"x":[[1e20]]}', b'{"x":[[NaN]]}', b'{"x":[[Infinity]]}',
    b'{"x":[[true]]}', b'{"x":[[1,false]]}', b'{"x":[[null]]}', b'{"x":[["1"]]}',
    b'{"x":[[{}]]}', b'{"x":[[1],[2,3]]}', b'{"x":[[1,2],[3]]}', b'{"x":[[1,2],[3,4,5],[6]]}',
    b'{"x":[[1,2,3],[4],[5,6]]}', b'{"x":[[]]}', b'{"x":[[],[]]}', b'{"x":[[1],[]]}',
    b'{"x":[[[1.0]]]}', b'{"x":[[1.0],2.0]}', b'{"x":[1,[2]]}', b'{"x":[[1[,2]]}',
    b'{"x":[[1][2]]}', b'{"x":[[1],,[2]]}', b'{"x":[[1,],[2]]}', b'{"x":[[,1]]}',
    b'{"x":[[01]]}', b'{"x":[[1.]]}', b'{"x":[[.5]]}', b'{"x":[[+1]]}', b'{"x":[[1 2]]}',
    b'{"x":[[1],[2]],"x":0}', b'{"x":[[1]],"x":null}', b'{"model":"\\"x\\":[[1]]","x":null}',
    b'{"a":{"x":[[1]]},"x":null}', b'{"a\\"x":[[1]],"x":null}', b'{"a":{"x":[[1]]},"\\u0078":null}',
    b'{"x":[[1]],"\\u0078":null}', b'{"x":[[1]],"model":"caf\\u00e9"}', b'{"a":"}","x":[[1]]}',
    b'{"a":"{","x":[[1]]}', b'{"a":[1],"x":[[1]]}', b'{"a":1}"x":[[1]]',
    b'{"a":[{"x":[[1]]}],"x":null}', b'{"x":[[1]],"a":{"x":null}}',
    b'{"x":0,"x":[[1]]}', b'{"x":[[1]],"\\u0078":0}', b'{"x":null,"y":[[1]]}',
    b'{"a":"x","b":[[1]]}', b'{"x":[["]]"],[1]]}', b'{"x":[[1],["a"]]}',
    b'{"\\u0078":[[2]],"x":[[1]]}', b'{"model":"\\"x\\":[[1]]","x":0}',
    b'{"model":"\\"x\\":[[1]]","x":[[2]]}', b'{"a":{"x":[[1]]},"x":0}',
    b'{"a":["x"],"x":[[1]]}', b'{"model":"x","x":[[1]]}', b'{"x":[[1]]e5}',
    b'{"x":[[1]].5}', b'{"x":[[1]]0}', b'{"x":[[1]]]}', b'{"x":[[1]]', b'{"x":[[1]',
    b'{"x":[[1]]}x', b'{"x":[[1]]} ', b' {"x":[[1]]}', b'{ "x" : [[1]] }',
    b'{"x":\n[[1]]}', b'{"x":[[1],\n[2]]}', b'{"x":[[1], [2] ]}', b'{"x":[ [1]]}',
    b'{"x":[[1]\t]}', b'{"x"\x0c:[[1]]}', b'{"x":[[1],[2]],}', b'{,"x":[[1]]}',
    b'[{"x":[[1]]}]', b'"x"', b'{"y":[[1]]}', b'{"x":[]}', b'{"x":[[1]],"y":[[2]]}',
    b'{"x":[[1] ],"y":[[2]]}', b'{"x":[[1]],"model":"a\\"x\\""}', b'{"x":[[1]], "model":"x"}',
    b'{"x":[[1e5,2],[3,4]], "model": "m"}', b'{"x":[[\xff]]}', b'{"x":[[1]]}\xff',
    b'{"x":[[1,2],[3,4]]' + b' ' * 3 + b'}', b'{"x":[[-]]}', b'{"x":[[1e]]}', b'{"x":[[--1]]}',
    b'{"x":[[0x10]]}', b'{"x":[[1_0]]}', b'{"x":[[1e5e5]]}',
    orjson.dumps({"x": [[float(i % 11)] for i in range(1000)]}),
    orjson.dumps({"x": [[i * 0.1, -i] for i in range(300)], "model": "m"}),
    json.dumps({"x": [[i * 0.1, -i, 1e-3] for i in range(30)]}).encode(),
]


@pytest.mark.parametrize("raw", BODIES, ids=range(len(BODIES)))
def test_bytes_and_plain_parse_agree(raw):
    _agree(raw)


def test_the_row_limit_is_the_plain_paths():
    raw = orjson.dumps({"x": [[1.0, 2.0]] * 11})
    _agree(raw, max_rows=10)
    _agree(raw, max_rows=11)


def test_the_common_bodies_take_the_bytes_path():
    """The fast path is taken (not only agreed with) for the bodies clients send."""
    rows = np.random.default_rng(0).standard_normal((200, 3)).tolist()
    for raw in (orjson.dumps({"x": rows}), json.dumps({"x": rows}).encode(),
                orjson.dumps({"model": "m", "x": rows}), orjson.dumps({"x": [[1]]})):
        split = split_matrix(raw)
        assert split is not None, raw[:40]
        rest, x = split
        assert rest["x"] is None
        want = orjson.loads(raw)
        assert np.array_equal(x, np.asarray(want["x"], np.float64).astype(np.float32))


_NUMBERS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False).map(lambda v: round(v, 3)),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.sampled_from([0, -0.0, 3.4028235e38, 3.5e38, 1e-46, 2**53 + 1, 2**63 - 1, 2**63]),
)
_CELLS = st.one_of(_NUMBERS, _NUMBERS, _NUMBERS,
                   st.sampled_from([True, False, None, "1", "x", "]]", '"x":', [1.0], {}]))


@st.composite
def _bodies(draw: st.DrawFn) -> bytes:
    width = draw(st.integers(0, 4))
    if draw(st.booleans()):  # numbers in rows of one width: what the fast path reads
        cells = st.one_of(_NUMBERS, st.floats(-1e3, 1e3), st.integers(-1000, 1000))
        rows = draw(st.lists(st.lists(cells, min_size=width, max_size=width), max_size=6))
    else:
        rows = draw(st.lists(st.one_of(st.lists(_CELLS, min_size=width, max_size=width),
                                       st.lists(_CELLS, max_size=5)), max_size=6))
    body: dict[str, Any] = {"x": rows}
    if draw(st.booleans()):
        body["model"] = draw(st.sampled_from(["m", "x", '"x":[[1]]', "[[", 5]))
    if draw(st.integers(0, 5)) == 0:
        body[draw(st.sampled_from(["rows", "y", "\\u0078"]))] = draw(_CELLS)
    if draw(st.booleans()):
        body = dict(reversed(body.items()))
    compact = draw(st.booleans())
    try:
        raw = (orjson.dumps(body) if compact else json.dumps(body).encode())
    except (TypeError, orjson.JSONEncodeError):  # an int past 64 bits: the stdlib writes it
        raw = json.dumps(body).encode()
    # then edit the text: a character put in, taken out or swapped where the fast path looks
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(raw)))
        piece = draw(st.sampled_from([b"[", b"]", b",", b" ", b'"', b"\\", b"0", b"e", b"-",
                                      b".", b"x", b":", b"{", b"}", b"\n", b"", b"],[",
                                      b'"x":[[1]],']))
        cut = draw(st.integers(0, 2))
        raw = raw[:at] + piece + raw[at + cut:]
    return raw


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=_bodies())
def test_any_body_answers_as_the_plain_parse(raw):
    _agree(raw)


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(st.lists(st.floats(allow_nan=False, allow_infinity=False, width=64),
                              min_size=3, max_size=3), min_size=1, max_size=40))
def test_floats_read_bit_for_bit(rows):
    """Every float a client's JSON carries is the float32 the plain parse makes of it."""
    split = split_matrix(orjson.dumps({"x": rows}))
    plain = np.asarray(rows, np.float64)
    with np.errstate(over="ignore"):
        want = plain.astype(np.float32)
    if not np.isfinite(want).all() or (np.abs(plain) >= 2.0**63).any():
        assert split is None  # left to the plain path, which names the row
        return
    assert split is not None
    assert split[1].tobytes() == want.tobytes()
    assert not any(math.isnan(v) for v in split[1].ravel())


def test_a_compact_thousand_row_body_makes_no_lists_to_collect():
    """Read from its bytes, a 1 000-row body starts no collection even with the collector on
    (the plain parse's 1 000 lists start one at least: tests/unit/serving/test_predict.py)."""
    raw = orjson.dumps({"x": [[float(i), 1.0] for i in range(1000)]})
    with gc_collections() as seen:
        for _ in range(50):
            core.parse_predict_body.__wrapped__(raw, "application/json", None,  # type: ignore[attr-defined]
                                                by_path=False)
    assert len(seen) <= 5  # none, but for another thread's allocations
