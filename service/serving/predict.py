"""The predict core that both predict routes share, whether FastAPI or the ASGI fast lane
(service/api/middleware/predict_lane.py) serves them: parse and check the body, then answer
from the cached model (loading it off the event loop on first use)."""

from __future__ import annotations

import functools
import gc
from collections.abc import Callable
from dataclasses import dataclass
from itertools import chain, repeat
from typing import Any, ParamSpec, TypeVar

import numpy as np
import orjson
from anyio import to_thread

from service.data.arrays import as_matrix, decode_json, is_json
from service.errors import (
    InvalidInput,
    LimitExceeded,
    ModelUnavailable,
    UnsupportedMediaType,
    unknown_field_message,
)
from service.serving import matrix_bytes
from service.serving.matrix_bytes import flat_rows, split_matrix
from service.serving.predictor import LoadedModel, Predictor
from service.serving.traffic import VERSION_HEADER

INLINE_PARAMETERS = 1_000_000
"""Most values GET /v1/models/{id} writes out as JSON; a larger model's are in its checkpoint."""

_P = ParamSpec("_P")
_R = TypeVar("_R")


def collector_paused(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Runs ``fn`` with the cyclic garbage collector off (issue 13, the predict tail).

    A JSON body of n rows is n lists. While they live, every 700 new ones start a collection
    of the youngest generation; the rows still alive survive it and move up, and enough of
    them start a full collection, which walks the whole heap: 140 ms for a server's 130 000
    objects, eleven times in five seconds of 1 000-row predicts on 16 connections, the p99.
    The lists hold no cycles: they die by reference count when ``fn`` returns, which takes
    them off the collector's count again, so no collection is owed for them afterwards.
    """

    @functools.wraps(fn)
    def paused(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        if not gc.isenabled():  # someone else turned it off: theirs to turn on
            return fn(*args, **kwargs)
        gc.disable()
        try:
            return fn(*args, **kwargs)  # its frame, and the lists with it, is gone on return
        finally:
            gc.enable()

    return paused


@dataclass(frozen=True)
class NamedFields:
    """A predict body's named form: each field's values (None where a row lacks it)."""

    columns: dict[str, list[Any]]
    rows: int
    form: str  # "rows" or "columns": where an error points


_FORMS = ("x", "rows", "columns")
_EXAMPLE = '{"x": [[...]]}, {"rows": [{"name": value, ...}]} or {"columns": {"name": [...]}}'


@collector_paused
def parse_predict_body(
    raw: bytes, content_type: str | None, ref: str | None, *, by_path: bool,
    max_rows: int | None = None,
) -> tuple[str | None, np.ndarray | NamedFields]:
    """Validate a predict body; returns (model reference, x as a float32 array or the named
    fields, which the model's pipeline turns into x)."""
    if not is_json(content_type):
        raise UnsupportedMediaType(f"send the body as application/json (got {content_type!r})")
    # x read from the bytes, or None: parsed the plain way
    split = split_matrix(raw) if len(raw) >= matrix_bytes.MIN_BYTES else None
    matrix: np.ndarray | None = None
    if split is None:
        body = decode_json(raw)
    else:
        body, matrix = split
    if not isinstance(body, dict):
        raise InvalidInput(f"the body must be a JSON object: {_EXAMPLE}")
    form = "x"
    if len(body) > 1 or "x" not in body:
        allowed = {*_FORMS} if by_path else {*_FORMS, "model"}
        unknown = set(body) - allowed
        if unknown:
            raise InvalidInput(unknown_field_message(unknown, allowed),
                               field=sorted(unknown)[0])
        forms = [f for f in _FORMS if f in body]
        if not forms:
            raise InvalidInput(f"x is required (or rows, or columns): {_EXAMPLE}", field="x")
        if len(forms) > 1:
            raise InvalidInput(f"send one of {' and '.join(forms)}, not both",
                               field=forms[1])
        form = forms[0]
        if not by_path:
            ref = body.get("model")
            if ref is not None and (not isinstance(ref, str) or not ref):
                raise InvalidInput("model must be a model id or name", field="model")
    data = body[form]
    count = (len(matrix) if matrix is not None else len(data) if isinstance(data, list) else
             len(next(iter(data.values()), [])) if form == "columns" and isinstance(data, dict)
             and isinstance(next(iter(data.values()), []), list) else 0)
    if max_rows is not None and count > max_rows:
        raise LimitExceeded(f"{count} rows exceed the predict limit of {max_rows} per "
                            "request (FITSERVE_MAX_PREDICT_ROWS)", field=form)
    if form == "rows":
        return ref, _rows_fields(data)
    if form == "columns":
        return ref, _columns_fields(data)
    return ref, rows_matrix(data) if matrix is None else matrix


def _rows_fields(rows: Any) -> NamedFields:
    """``[{"sqft": 1200, "city": "Lyon"}, ...]`` -> each field's values (None where absent)."""
    if not isinstance(rows, list) or not rows:
        raise InvalidInput('rows must be a non-empty list of objects: [{"name": value, ...}]',
                           field="rows")
    if set(map(type, rows)) != {dict}:
        i = next(i for i, r in enumerate(rows) if type(r) is not dict)
        raise InvalidInput(f'rows[{i}] must be an object: {{"name": value, ...}}',
                           field="rows")
    names: set[str] = set().union(*rows)
    n = len(rows)
    return NamedFields({k: list(map(dict.get, rows, repeat(k, n))) for k in names}, n, "rows")


def _columns_fields(columns: Any) -> NamedFields:
    """``{"sqft": [...], "city": [...]}``: lists of one length."""
    if not isinstance(columns, dict) or not columns:
        raise InvalidInput('columns must be a non-empty object of lists: {"name": [...]}',
                           field="columns")
    n = -1
    for name, values in columns.items():
        if not isinstance(values, list):
            raise InvalidInput(f"columns.{name} must be a list of values", field=f"columns.{name}")
        if n < 0:
            n = len(values)
        elif len(values) != n:
            raise InvalidInput(f"columns.{name} has {len(values)} values; the columns before it "
                               f"have {n}: every column needs one value per row",
                               field=f"columns.{name}")
    if n == 0:
        raise InvalidInput("columns hold no rows", field="columns")
    return NamedFields(dict(columns), n, "columns")


def rows_matrix(x: Any) -> np.ndarray:
    """``as_matrix(x, "x")``, the same array or the same error, found faster for the body
    clients send: rows of one width holding numbers. numpy's nested-list discovery costs
    more than the JSON parse; here the rows and cells are checked in C (``map``, ``set``)
    and the flat cells read as float64 the way numpy reads a list of floats and ints (each
    rounded once, to nearest). Anything else, and every error, is as_matrix's."""
    if type(x) is list and x and type(x[0]) is list:
        n, width = len(x), len(x[0])
        if width and set(map(type, x)) == {list} and set(map(len, x)) == {width}:
            flat = list(chain.from_iterable(x))
            if set(map(type, flat)) <= {float, int}:
                out = flat_rows(flat, n, width)
                if out is not None:
                    return out
    return as_matrix(x, "x")


async def predict_result(
    predictor: Predictor, tenant: str, ref: str | None, x: np.ndarray | NamedFields,
    route_key: str | None = None,
) -> dict[str, Any]:
    """The answer's fields; ``version`` is the version that answered (a name with a traffic
    split draws it, by ``route_key`` when one is given)."""
    model = predictor.cached(ref, tenant, route_key)
    if model is None:  # first use: resolve and load off the event loop
        model = await to_thread.run_sync(predictor.load, ref, tenant, route_key)
    if isinstance(x, NamedFields):
        x = model.matrix(x.columns, x.rows, x.form)
    p = model.infer(x)
    predictor.answered(model, len(p.y))  # the /metrics counters
    result: dict[str, Any] = {"model_id": model.id, "model_name": model.name,
                              "version": model.version, "y": p.y}
    if p.labels is not None:
        named = model.labelled(p)
        if named is None:
            result["labels"] = p.labels
            result["probabilities"] = p.probabilities
        else:
            result["labels"], result["probabilities"] = named
    return result


async def model_parameters(
    predictor: Predictor, model_id: str, tenant: str
) -> tuple[dict[str, Any] | None, str | None]:
    """Every tensor of a model by name, as nested lists, read from its verified checkpoint
    (what predict serves); None beyond INLINE_PARAMETERS values. Second: why the checkpoint
    cannot be read, when it cannot (the model's record stays readable)."""
    model, error = await loaded_model(predictor, model_id, tenant)
    if model is None or sum(v.size for v in model.state.values()) > INLINE_PARAMETERS:
        return None, error
    return {k: v.tolist() for k, v in model.state.items()}, None


async def loaded_model(predictor: Predictor, model_id: str, tenant: str
                       ) -> tuple[LoadedModel | None, str | None]:
    """The model as predict serves it (loaded off the event loop on first use), or why its
    checkpoint cannot be read."""
    try:
        model = predictor.cached(model_id, tenant)
        if model is None:
            model = await to_thread.run_sync(predictor.load, model_id, tenant)
    except ModelUnavailable as e:
        return None, e.message
    return model, None


def encode_result(result: dict[str, Any]) -> bytes:
    """``orjson.dumps(result)`` with numpy arrays, byte for byte, written faster for the
    common answer: ``y`` last and one column. orjson writes an (N, 1) array row by row, three
    times slower than the same N values flat; the flat text, each comma made "],[", is the
    same text."""
    y = result.get("y")
    if (isinstance(y, np.ndarray) and y.ndim == 2 and y.shape[1] == 1 and len(y) > 1
            and next(reversed(result)) == "y"):
        head = orjson.dumps({**result, "y": None})  # ... "y":null}
        flat = orjson.dumps(y.ravel(), option=orjson.OPT_SERIALIZE_NUMPY)  # [a,b,...]
        return head[: -len(b"null}")] + b"[[" + flat[1:-1].replace(b",", b"],[") + b"]]}"
    return orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY)


def version_headers(result: dict[str, Any]) -> dict[str, str]:
    """``X-Fitserve-Model-Version``: which version answered (none for an unnamed model)."""
    version = result.get("version")
    return {} if version is None else {VERSION_HEADER: str(version)}
