"""A predict body's ``x`` read from its bytes, without the n lists of the JSON tree (issue 13:
a 1 000-row ``/predict``).

``{"x": [[1.5], [2.0], ...]}`` parsed by orjson is 1 000 lists; making them, then checking
them and reading them into numpy, is most of such a request. Here the rows' brackets are
checked on the bytes (they alternate, row after row, with one comma between rows and the same
number of commas in each), blanked, and orjson reads the numbers as one flat list, the same
numbers it reads nested. The body around ``x`` is parsed with ``x`` replaced by ``null``.

Anything this does not recognise (a string, a bool or null in ``x``, escapes or nesting
before the key, a second ``"x"`` after it, a number that would not read as the plain path
reads it) answers None, and the caller parses the body the
plain way: every error and every unusual body is the plain path's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

_BLANK_BRACKETS = bytes.maketrans(b"[]", b"  ")
_WHITESPACE = b" \n\r\t"
_SPACES = (b" ", b"\n", b"\r", b"\t")
_OPEN, _CLOSE, _COMMA = ord("["), ord("]"), ord(",")
MIN_BYTES = 2048
"""Smaller bodies are parsed the plain way: their lists are few, and this path's fixed cost
(a dozen numpy calls, about 8 µs) is more than they cost (a body of 2 KB holds some 100 to
250 rows; 1 000 rows of one feature are read twice as fast here)."""
_INT_LIMIT = float(2**63)
"""as_matrix reads ints from 2**63 another way (uint64, objects): those bodies go the plain
way (so do floats that large, all the rarer)."""


def split_matrix(raw: bytes) -> tuple[dict[str, Any], np.ndarray] | None:
    """(the body's object with ``x`` as None, x as float32 rows), or None: parse it plainly."""
    at = raw.find(b'"x"')
    if at < 0:
        return None
    # no escapes before the key, so every quote is a string's edge and the key is a key (the
    # rest's parse below refuses it otherwise), and one brace: the top-level object's
    head = raw[:at]
    if b"\\" in head or head.count(b"{") != 1:
        return None
    colon = raw.find(b":", at + 3)
    if colon < 0 or raw[at + 3 : colon].strip():
        return None
    start = raw.find(b"[[", colon + 1)
    if start < 0 or raw[colon + 1 : start].strip():
        return None
    end = raw.find(b"]]", start)
    if end < 0:
        return None
    end += 2
    tail = raw[end:]
    if b'"x"' in tail or b"\\" in tail:  # a second x, maybe escaped: the last one counts
        return None
    x = read_rows(raw[start + 1 : end - 1])
    if x is None:
        return None
    try:
        rest = orjson.loads(raw[:start] + b"null" + tail)
    except orjson.JSONDecodeError:
        return None
    if type(rest) is not dict or "x" not in rest or rest["x"] is not None:
        return None
    return rest, x


def read_rows(inner: bytes) -> np.ndarray | None:
    """``[a, b],[c, d],...`` (the rows between x's outer brackets) as float32, exactly as
    ``rows_matrix`` reads the lists orjson makes of them; None when it cannot say so."""
    if b'"' in inner or b"{" in inner or b"u" in inner or b"l" in inner:
        return None  # strings, objects, true, false, null: the plain way names the row
    # the brackets and commas are checked without whitespace (json.dumps' ", ", or any
    # other layout); orjson reads the text with it, and refuses two numbers it would join
    marks = inner.translate(None, _WHITESPACE) if any(w in inner for w in _SPACES) else inner
    buf = np.frombuffer(marks, np.uint8)
    opens = np.flatnonzero(buf == _OPEN)
    n = len(opens)
    is_comma = buf == _COMMA
    values = int(np.count_nonzero(is_comma)) + 1
    if not n or values % n:
        return None
    width = values // n
    closes = np.flatnonzero(buf == _CLOSE)
    if len(closes) != n or opens[0] != 0 or closes[-1] != len(buf) - 1:
        return None
    if n > 1:
        # row i + 1 opens two bytes after row i closes, a comma between (so each row closes
        # after it opens): rows of bracket-free text, one comma apart
        between = closes[:-1] + 1
        if not ((opens[1:] == between + 1).all() and is_comma[between].all()):
            return None
        # and each holds width - 1 commas: row i opens after i * width of them
        if width > 1 and not (np.searchsorted(np.flatnonzero(is_comma), opens)
                              == np.arange(0, n * width, width)).all():
            return None
    try:
        flat = orjson.loads(b"[" + inner.translate(_BLANK_BRACKETS) + b"]")
    except orjson.JSONDecodeError:  # an empty row, a stray comma, a bad number: the plain way
        return None
    if len(flat) != n * width:
        return None
    return flat_rows(flat, n, width)


def flat_rows(flat: list[Any], n: int, width: int) -> np.ndarray | None:
    """``flat`` (``n * width`` Python floats and ints) as (n, width) float32, read as numpy
    reads a list of them (each rounded once to float64, then to float32); None unless every
    value is below 2**63 in size, where as_matrix reads ints the same way and float32 holds
    them all (a larger one, inf or NaN: the plain way, which names the row)."""
    try:
        arr = np.array(flat, np.float64)
    except (OverflowError, TypeError, ValueError):
        return None
    if not float(np.abs(arr).max(initial=0.0)) < _INT_LIMIT:  # NaN is not below it either
        return None
    return arr.astype(np.float32).reshape(n, width)  # (N*width,) -> (N, width)
