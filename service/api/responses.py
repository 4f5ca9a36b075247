"""HTTP helpers shared by the routes: fast JSON in and out, and the error handlers."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.api.schemas import PATTERN_WORDS, ErrorResponse
from service.data.arrays import is_json
from service.errors import (
    ServiceError,
    UnsupportedMediaType,
    clip,
    closest_name,
    error_body,
    unknown_field_message,
)

log = logging.getLogger(__name__)


class JSONBytes(Response):
    """orjson-rendered JSON; numpy arrays serialize natively (float32 as float32)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def error_response(status: int, type_: str, message: str, *,
                   headers: Mapping[str, str] | None = None, **extra: Any) -> JSONBytes:
    return JSONBytes(error_body(type_, message, **extra), status_code=status,
                     headers=dict(headers) if headers else None)


async def require_json(request: Request) -> None:
    """Dependency of routes with a JSON body: another media type is a 415, not a 422."""
    if not is_json(request.headers.get("content-type")):
        raise UnsupportedMediaType(
            f"send the body as application/json (got {request.headers.get('content-type')!r})"
        )


def json_body_doc(model: type[BaseModel], *,
                  extra_content: dict[str, Any] | None = None) -> dict[str, Any]:
    """OpenAPI for a route that parses its body itself (for speed or several media types)."""
    content: dict[str, Any] = {"application/json": {"schema": model.model_json_schema()}}
    content.update(extra_content or {})
    return {"requestBody": {"required": True, "content": content}}


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": desc}
    for code, desc in {
        400: "Malformed body",
        404: "Not found",
        409: "Conflict with the resource's state",
        413: "Body too large",
        401: "No or unknown API key",
        403: "The key's scope does not allow this, or a refused Origin/Host",
        429: "Too many active jobs (see Retry-After)",
        415: "Unsupported media type",
        422: "Invalid input (the message names the field or row)",
        503: "Unavailable: a checkpoint fails its checksum or cannot be read, or storage fails",
        507: "The server's disk is full (see Retry-After); deletes still work",
    }.items()
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {c: ERRORS[c] for c in codes}


_STATUS_TYPES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


_UNIONS = ("optimizer", "model", "scheduler")
_MATRICES = ("x", "y")
_ROWS_EXAMPLE = "[[1.0], [2.0]]"


def _members(tp: Any) -> list[Any]:
    """An annotation's types, with Annotated, Optional and unions opened."""
    origin = get_origin(tp)
    if origin is Annotated:
        return _members(get_args(tp)[0])
    if origin in (Union, UnionType):
        return [m for arg in get_args(tp) for m in _members(arg)]
    return [tp]


def _models(types: list[Any]) -> list[type[BaseModel]]:
    return [t for t in types if isinstance(t, type) and issubclass(t, BaseModel)]


def _tags(model: type[BaseModel]) -> set[str]:
    """The values of the model's Literal fields (a discriminated union's tag)."""
    return {str(v) for f in model.model_fields.values() for t in _members(f.annotation)
            if get_origin(t) is Literal for v in get_args(t)}


def _types_at(root: Any, path: list[str]) -> list[Any]:
    """The types a body location can hold, following a validation error's ``loc`` from the
    route's body model (list indices and a discriminated union's tag included)."""
    types = _members(root)
    for part in path:
        fields = [m.model_fields[part] for m in _models(types) if part in m.model_fields]
        if fields:
            types = [t for f in fields for t in _members(f.annotation)]
        elif part.isdigit():
            types = [t for c in types if get_origin(c) in (list, tuple)
                     for a in get_args(c) if a is not Ellipsis for t in _members(a)]
        else:  # the tag pydantic puts in the path: the union's member it names
            types = [m for m in _models(types) if part in _tags(m)]
        if not types:
            return []
    return types


def _known_fields(root: Any, path: list[str]) -> list[str]:
    """The fields a body object at ``path`` takes, with the flat forms a model accepts."""
    names: set[str] = set()
    for model in _models(_types_at(root, path)):
        names.update(model.model_fields)
        names.update(getattr(model, "FLAT_FIELDS", ()))
    return sorted(names)


def _shown(value: Any, *, json: bool = True) -> str:
    """A value as the client wrote it: JSON in a body, plain text in a query or path."""
    if not json and isinstance(value, str):
        return clip(value, 40)
    try:
        text = orjson.dumps(value).decode()
    except TypeError:
        text = repr(value)
    return clip(text, 40)


def _quoted(text: str) -> list[str]:
    return re.findall(r"'([^']*)'", text)


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _matrix_problem(err: Mapping[str, Any], loc: list[str]) -> str | None:
    """A row or cell of ``x`` or ``y`` in the words the dataset and predict routes use."""
    name, t, value = loc[0], err.get("type"), err.get("input")
    form = f"{name} is a list of rows, e.g. {_ROWS_EXAMPLE}"
    if t == "list_type" and len(loc) == 1:
        return f"{form}; got {_shown(value)}"
    if t == "list_type" and len(loc) == 2:
        return f"{form}; row {loc[1]} is {_shown(value)}, not a list"
    if len(loc) == 3 and t in ("float_type", "float_parsing"):
        return f"{name} row {loc[1]} column {loc[2]} is not a number: {_shown(value)}"
    if len(loc) == 3 and t == "finite_number":
        return f"{name} row {loc[1]} column {loc[2]} is not a finite number"
    return None


def _problem(err: Mapping[str, Any], raw: list[str], field: str | None, root: Any) -> str:
    """One pydantic error in our words: what is wrong with which field, and what to send.
    ``raw``: the error's location, union tags included; ``root``: the body's model when the
    error is in the body (None in a query, path or header)."""
    t = str(err.get("type", ""))
    ctx: Mapping[str, Any] = err.get("ctx") or {}
    msg = str(err.get("msg", "invalid value"))
    value = err.get("input")
    got = f", got {_shown(value, json=root is not None)}"
    if raw and raw[0] in _MATRICES and (text := _matrix_problem(err, raw)):
        return text
    if not field:
        field = "the body"
    if t == "missing":
        return f"{field} is required"
    if t == "extra_forbidden":
        parent = field.rpartition(".")[0]
        return unknown_field_message([raw[-1]], _known_fields(root, raw[:-1]),
                                     prefix=f"{parent}." if parent else "")
    if t in ("value_error", "assertion_error"):
        text = str(ctx.get("error") or msg.split(", ", 1)[-1])
        return text if field == "the body" else f"{field}: {text}"
    if t == "union_tag_invalid":
        tags = _quoted(str(ctx.get("expected_tags", "")))
        guess = closest_name(str(ctx.get("tag", "")), tags)
        return (f"{field} {ctx.get('tag')!r} does not match any of {ctx.get('expected_tags')}"
                + (f"; did you mean {guess!r}?" if guess else ""))
    if t == "union_tag_not_found":
        tags = sorted({tag for m in _models(_types_at(root, raw)) for tag in _tags(m)})
        return f"{field} is required" + (f": one of {', '.join(map(repr, tags))}" if tags else "")
    if t == "literal_error":
        choices = _quoted(str(ctx.get("expected", "")))
        guess = closest_name(str(value), choices) if isinstance(value, str) else None
        return (f"{field} must be {ctx.get('expected')}{got}"
                + (f"; did you mean {guess!r}?" if guess else ""))
    if t == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern", ""))
        words = PATTERN_WORDS.get(pattern)
        return f"{field} must match the pattern {pattern!r}" + (f": {words}" if words else "")
    if t in ("too_short", "too_long"):
        bound = "at least" if t == "too_short" else "at most"
        n = ctx.get("min_length" if t == "too_short" else "max_length")
        return f"{field} must have {bound} {_plural(int(n or 0), 'item')}, got " \
               f"{ctx.get('actual_length')}"
    kinds = {"int": "a whole number", "float": "a number", "bool": "true or false",
             "string": "a string", "list": "a list", "dict": "an object", "model": "an object",
             "tuple": "a list"}
    kind = t.split("_", 1)[0]
    if kind in kinds and t.endswith(("_type", "_parsing", "_from_float")):
        return f"{field} must be {kinds[kind]}{got}"
    if t == "finite_number":
        return f"{field} must be a finite number"
    if msg.startswith("Input should be "):  # greater_than, less_than_equal, ...
        return f"{field} must be {msg.removeprefix('Input should be ')}{got}"
    if msg.startswith("String should have "):
        return f"{field} must have {msg.removeprefix('String should have ')}"
    return f"{field}: {msg}"


def _validation_message(
    exc: RequestValidationError, root: Any = None
) -> tuple[int, str, str, str | None]:
    """The first problem in our words, and how many more there are. ``root``: the route's
    body model, which says the fields an unknown one may have meant."""
    errs = exc.errors()
    first: Mapping[str, Any] = errs[0] if errs else {"msg": "invalid request", "loc": ()}
    if first.get("type") == "json_invalid":
        why = (first.get("ctx") or {}).get("error") or first.get("msg")
        return 400, "malformed_body", f"the body is not valid JSON: {why}", None
    raw = [str(p) for p in first.get("loc", ())]
    if raw and raw[0] in ("body", "query", "path", "header"):
        root = root if raw[0] == "body" else None
        raw = raw[1:]
    # a discriminated union puts its tag in the path (optimizer.sgd.lr): drop it
    loc = [p for i, p in enumerate(raw) if not (i > 0 and raw[i - 1] in _UNIONS)]
    tag = (first.get("ctx") or {}).get("discriminator")
    if first.get("type") in ("union_tag_invalid", "union_tag_not_found") and tag:
        loc.append(str(tag).strip("'"))  # the field at fault is the tag: model.kind
    field = ".".join(loc) if loc else None
    if raw and raw[0] in _MATRICES:
        field = raw[0]  # the message names the row and column, as the dataset routes do
    msg = _problem(first, raw, field, root)
    if len(errs) > 1:
        msg += f" (and {_plural(len(errs) - 1, 'more problem')})"
    return 422, "invalid_input", msg, field


def _body_model(request: Request) -> Any:
    """The model the route reads its body as (None for a route without one)."""
    body_field = getattr(request.scope.get("route"), "body_field", None)
    return getattr(getattr(body_field, "field_info", None), "annotation", None)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> Response:
        # the traceback's frames hold the request (its body) and, when the error came from a
        # thread pool, a cycle through its future that only a full collection frees
        exc.__traceback__ = None
        return JSONBytes(exc.to_dict(), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        status, type_, msg, field = _validation_message(exc, _body_model(request))
        if field:
            return error_response(status, type_, msg, field=field)
        return error_response(status, type_, msg)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        type_ = _STATUS_TYPES.get(exc.status_code, "http_error")
        msg = str(exc.detail) if exc.detail else type_
        if exc.status_code == 404 and msg == "Not Found":
            msg = f"no route {request.url.path!r}"
        elif exc.status_code == 405:
            msg = f"{request.method} is not allowed on {request.url.path!r}"
        return error_response(exc.status_code, type_, msg,
                              headers=getattr(exc, "headers", None))

    # no handler for Exception: Starlette's ServerErrorMiddleware would answer and then
    # re-raise, and uvicorn would close the connection; RequestTelemetry (the outermost user
    # middleware) answers unexpected errors instead, in the JSON shape, and keeps it open
