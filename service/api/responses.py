"""HTTP helpers shared by the routes: fast JSON in and out, and the error handlers."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.api.schemas import ErrorResponse
from service.data.arrays import is_json
from service.errors import ServiceError, UnsupportedMediaType, error_body

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


def _validation_message(exc: RequestValidationError) -> tuple[int, str, str, str | None]:
    errs = exc.errors()
    first: Mapping[str, Any] = errs[0] if errs else {"msg": "invalid request", "loc": ()}
    if first.get("type") == "json_invalid":
        why = (first.get("ctx") or {}).get("error") or first.get("msg")
        return 400, "malformed_body", f"the body is not valid JSON: {why}", None
    raw = [str(p) for p in first.get("loc", ())]
    if raw and raw[0] in ("body", "query", "path", "header"):
        raw = raw[1:]
    # a discriminated union puts its tag in the path (optimizer.sgd.lr): drop it
    loc = [p for i, p in enumerate(raw) if not (i > 0 and raw[i - 1] in _UNIONS)]
    tag = (first.get("ctx") or {}).get("discriminator")
    if first.get("type") in ("union_tag_invalid", "union_tag_not_found") and tag:
        loc.append(str(tag).strip("'"))  # the field at fault is the tag: model.kind
    field = ".".join(loc) if loc else None
    msg = str(first.get("msg", "invalid value"))
    if first.get("type") == "missing" and field:
        msg = f"{field} is required"
    elif first.get("type") == "extra_forbidden" and field:
        msg = f"unknown field {field!r}"
    elif field:
        msg = f"{field}: {msg}"
    if len(errs) > 1:
        msg += f" (and {len(errs) - 1} more problem(s))"
    return 422, "invalid_input", msg, field


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> Response:
        # the traceback's frames hold the request (its body) and, when the error came from a
        # thread pool, a cycle through its future that only a full collection frees
        exc.__traceback__ = None
        return JSONBytes(exc.to_dict(), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        status, type_, msg, field = _validation_message(exc)
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
