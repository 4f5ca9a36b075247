"""Turning client-sent rows into float arrays, with errors that name the row."""

from __future__ import annotations

from itertools import chain
from typing import Any

import numpy as np
import orjson

from service.errors import InvalidInput, MalformedBody


def decode_json(raw: bytes) -> Any:
    """A request body as JSON, or a 400 that says where it breaks (and why NaN does)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        hint = " (NaN and Infinity are not JSON; send finite numbers)" if (
            b"NaN" in raw or b"Infinity" in raw) else ""
        raise MalformedBody(f"the body is not valid JSON: {e}{hint}") from None


def as_matrix(value: Any, field: str, *, dtype: Any = np.float32) -> np.ndarray:
    """``[[...], ...]`` (or a flat list, read as one column) -> a finite 2-D array.

    The fast path hands the whole list to numpy; only when that fails does a slow pass
    look for the row at fault, so a good request costs one conversion.
    """
    if not isinstance(value, list):
        raise InvalidInput(f"{field} must be a list of rows", field=field)
    if not value:
        raise InvalidInput(f"{field} is empty: send at least one row", field=field)
    try:
        arr = np.asarray(value)  # dtype inferred, so strings are not coerced (bools: below)
    except (ValueError, TypeError, OverflowError):
        raise _find_bad_row(value, field) from None
    if arr.dtype.kind not in "fiu":
        raise _find_bad_row(value, field)
    if arr.ndim > 2 or _has_bool(value, flat=arr.ndim == 1):
        raise _find_bad_row(value, field)
    arr = arr.astype(np.float64, copy=False)
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1)  # a flat list is one column
    if arr.shape[1] == 0:
        raise InvalidInput(f"{field} row 0 is empty", field=field)
    if not np.isfinite(arr).all():
        row, col = np.argwhere(~np.isfinite(arr))[0]
        raise InvalidInput(
            f"{field} row {row} column {col} is not a finite number ({arr[row, col]})",
            field=field,
        )
    with np.errstate(over="ignore"):
        out = arr.astype(dtype, copy=False)
    if dtype is np.float32 and not np.isfinite(out).all():
        row, col = np.argwhere(~np.isfinite(out))[0]
        raise InvalidInput(
            f"{field} row {row} column {col} ({arr[row, col]}) overflows float32", field=field
        )
    return out


def _has_bool(value: list[Any], *, flat: bool) -> bool:
    """numpy reads ``[True, 0.5]`` as ``[1.0, 0.5]``: a bool among numbers leaves no trace in
    the dtype. map and set run in C, so this costs less than the conversion itself."""
    cells = value if flat else chain.from_iterable(value)
    return bool in set(map(type, cells))


def _find_bad_row(value: list[Any], field: str) -> InvalidInput:
    flat = all(not isinstance(r, list) for r in value)
    if flat:
        for i, v in enumerate(value):
            if not _is_number(v):
                return InvalidInput(f"{field} row {i} is not a number: {_show(v)}", field=field)
        return InvalidInput(f"{field} must be a list of rows of numbers", field=field)
    width = None
    for i, row in enumerate(value):
        if not isinstance(row, list):
            return InvalidInput(f"{field} row {i} is not a list: {_show(row)}", field=field)
        if not row:
            return InvalidInput(f"{field} row {i} is empty", field=field)
        for j, v in enumerate(row):
            if not _is_number(v):
                return InvalidInput(
                    f"{field} row {i} column {j} is not a number: {_show(v)}", field=field
                )
        if width is None:
            width = len(row)
        elif len(row) != width:
            return InvalidInput(
                f"{field} is ragged: row {i} has {len(row)} values, row 0 has {width}",
                field=field,
            )
    return InvalidInput(f"{field} must be a list of rows of numbers", field=field)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _show(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def check_xy(x: np.ndarray, y: np.ndarray) -> None:
    if x.shape[0] != y.shape[0]:
        raise InvalidInput(
            f"x has {x.shape[0]} rows but y has {y.shape[0]}: each row of x needs one row of y",
            field="y",
        )


def is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")
