"""Hypothesis strategies for client-sent matrices, good and bad, and the oracle that says
which is which without asking the service.

A body is built as Python values and serialized here, so that what JSON cannot carry (NaN,
Infinity, 1e400) can still be sent: such cells are ``Raw`` tokens, written verbatim.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from hypothesis import strategies as st

F32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class Raw:
    """A token written into the body as is (not valid JSON, or not a finite double)."""

    text: str


def dumps(value: Any) -> bytes:
    """JSON bytes of ``value``, with each ``Raw`` written verbatim."""
    tokens: list[str] = []

    def default(o: Any) -> Any:
        if isinstance(o, Raw):
            tokens.append(o.text)
            return f"\x00raw{len(tokens) - 1}\x00"
        raise TypeError(type(o))

    text = json.dumps(value, default=default, allow_nan=True)
    for i, token in enumerate(tokens):
        text = text.replace(json.dumps(f"\x00raw{i}\x00"), token)
    return text.encode()


def is_strict_json(raw: bytes) -> bool:
    """What the service's parser (orjson) takes: no NaN/Infinity, no double overflow."""
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False
    return True


# ------------------------------------------------------------------ cells

# orjson reads integers beyond 64 bits as doubles: 2**70 is a fine float32 (1.18e21)
good_cells = st.one_of(
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
    st.floats(min_value=-3e38, max_value=3e38, allow_nan=False),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -0.0, 5e-324, 1e-45, 3.4e38, -3.4e38, 2**63, 2**64, 2**64 + 1]),
)

overflowing_cells = st.one_of(
    st.floats(min_value=3.5e38, max_value=1.7e308).flatmap(lambda v: st.sampled_from([v, -v])),
    st.sampled_from([1e39, -1e39, 1e308, -1e308, 10**39, 10**300]),
)

non_finite_cells = st.sampled_from(
    [Raw("NaN"), Raw("Infinity"), Raw("-Infinity"), Raw("1e309"), Raw("-1e400"),
     Raw(str(10**400))]
)

BAD_CELLS: dict[str, st.SearchStrategy[Any]] = {
    "overflow": overflowing_cells,
    "non_finite": non_finite_cells,
    "string": st.text(max_size=8),
    "bool": st.booleans(),
    "null": st.none(),
    "list": st.lists(st.integers(-5, 5), max_size=2),
    "object": st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
}
"""Each kind of bad cell, so that a test can be run per kind: drawn from one mixed strategy,
the small kinds (a bool, null) would come up once or twice in a hundred examples."""


def matrices(rows: st.SearchStrategy[int], width: st.SearchStrategy[int],
             cells: st.SearchStrategy[Any] = good_cells) -> st.SearchStrategy[list[list[Any]]]:
    return st.tuples(rows, width).flatmap(
        lambda nk: st.lists(st.lists(cells, min_size=nk[1], max_size=nk[1]),
                            min_size=nk[0], max_size=nk[0])
    )


@st.composite
def with_bad_cell(draw: st.DrawFn, matrix: list[list[Any]], kind: str) -> list[list[Any]]:
    m = [list(r) for r in matrix]
    i = draw(st.integers(0, len(m) - 1))
    m[i][draw(st.integers(0, len(m[i]) - 1))] = draw(BAD_CELLS[kind])
    return m


SHAPES = ("ragged", "empty_row", "no_rows", "mixed", "deeper", "not_a_list")


@st.composite
def misshapen(draw: st.DrawFn, matrix: list[list[Any]], how: str) -> Any:
    """``matrix`` made invalid in one way (one of ``SHAPES``): a ragged or empty row, no
    rows, a flat value among rows, another nesting, or not a list at all."""
    m = [list(r) for r in matrix]
    i = draw(st.integers(0, len(m) - 1))
    if how == "ragged":
        if len(m) == 1:
            m.append(m[0] + [1.0])
        elif draw(st.booleans()) or len(m[i]) == 1:
            m[i] = m[i] + [1.0]
        else:
            m[i] = m[i][:-1]
    elif how == "empty_row":
        m[i] = []
    elif how == "no_rows":
        m = []
    elif how == "mixed":
        m[i] = 1.0
    elif how == "deeper":
        m[i] = [m[i]]
    else:
        return draw(st.one_of(st.none(), st.integers(), st.text(max_size=5),
                              st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)))
    return m


# ------------------------------------------------------------------ the oracle


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def fits_float32(v: int | float) -> bool:
    as_double = float(v) if abs(v) < 2**1023 else math.inf  # orjson's reading of an int
    with np.errstate(over="ignore"):
        return math.isfinite(as_double) and bool(np.isfinite(np.float32(as_double)))


def matrix_rows(value: Any) -> list[list[float]] | None:
    """The rows a valid matrix stands for (a flat list is one column), or None if invalid."""
    if not isinstance(value, list) or not value:
        return None
    if all(_is_number(v) for v in value):
        value = [[v] for v in value]
    elif not all(isinstance(r, list) for r in value):
        return None
    width = len(value[0])
    if width == 0:
        return None
    for row in value:
        if len(row) != width or not all(_is_number(v) and fits_float32(v) for v in row):
            return None
    return [[float(v) for v in row] for row in value]


def assert_error_shape(status: int, body: Any, raw_text: str) -> None:
    """A 4xx in the one error shape, with nothing internal in it."""
    assert 400 <= status < 500, f"{status}: {raw_text[:500]}"
    assert isinstance(body, dict) and set(body) == {"error"}, raw_text[:500]
    err = body["error"]
    assert isinstance(err.get("type"), str) and err["type"], raw_text[:500]
    assert isinstance(err.get("message"), str) and err["message"], raw_text[:500]
    assert set(err) <= {"type", "message", "field"}, raw_text[:500]
    for leak in ("Traceback", "site-packages", "/work/", 'File "', "numpy", "polars"):
        assert leak not in err["message"], f"the error leaks {leak!r}: {err['message']}"
