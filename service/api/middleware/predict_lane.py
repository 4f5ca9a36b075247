"""A pure ASGI fast lane for the predict routes: ``/predict``, ``/v1/models/{id}/predict``
and the Open Inference Protocol's ``/v2/models/{name}[/versions/{version}]/infer``.

FastAPI's routing, dependency resolution and response machinery cost more than a linear
model's prediction; for the routes other services call in a loop, this lane reads the body,
runs the same validation and prediction as the FastAPI routes (service/serving/predict.py,
service/serving/protocol.py), and writes the bytes itself. The FastAPI routes stay for the
OpenAPI docs and answer the same, errors included (tests/api/test_predict_lane.py); any
other request passes straight through.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

import orjson
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import PayloadTooLarge, ServiceError
from service.serving.predict import encode_result, parse_predict_body, predict_result
from service.serving.protocol import (
    BINARY_MEDIA,
    HEADER_LENGTH,
    InferenceProtocol,
    error_answer,
    infer_raw,
)
from service.serving.traffic import ROUTE_KEY_HEADER, VERSION_HEADER

log = logging.getLogger(__name__)

_MODELS = "/v1/models/"
_SUFFIX = "/predict"
_V2_MODELS = "/v2/models/"
_V2_SUFFIX = "/infer"
_JSON = b"application/json"
_BINARY = BINARY_MEDIA.encode()
_VERSION = VERSION_HEADER.lower().encode()
_HEAD_LENGTH = HEADER_LENGTH.encode()


class _Route(NamedTuple):
    """What the telemetry layer reads of a matched route (its template) for a request the
    lane answered before routing: one metrics series per route, as FastAPI's would be."""

    path: str


_V2_INFER = _Route("/v2/models/{name}/infer")
_V2_VERSION_INFER = _Route("/v2/models/{name}/versions/{version}/infer")


class PredictLane:
    def __init__(self, app: ASGIApp, services: Any, inference: InferenceProtocol) -> None:
        self.app = app
        self.services = services
        self.inference = inference  # the app's: one model-version cache for both v2 paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        path: str = scope["path"]
        if path.startswith(_V2_MODELS) and path.endswith(_V2_SUFFIX):
            return await self._infer(scope, receive, send, path)
        if path == "/predict":
            ref, by_path = None, False
        elif path.startswith(_MODELS) and path.endswith(_SUFFIX):
            ref, by_path = path[len(_MODELS) : -len(_SUFFIX)], True
            if not ref or "/" in ref:
                return await self.app(scope, receive, send)
        else:
            return await self.app(scope, receive, send)
        try:
            headers = Headers(scope=scope)
            tenant = await self.services.authenticate(headers, "predict")
            raw = await _body(receive, self.services.settings.max_body_bytes)
            ref, x = parse_predict_body(raw, headers.get("content-type"), ref, by_path=by_path,
                                        max_rows=self.services.settings.max_predict_rows)
            del raw
            result = await predict_result(self.services.predictor, tenant, ref, x,
                                          headers.get(ROUTE_KEY_HEADER))
            version = result["version"]
            await _send(send, 200, encode_result(result),
                        None if version is None else [(_VERSION, str(version).encode())])
        except _ClientGone:
            return  # nobody to answer; the telemetry layer logs it as a 499
        except ServiceError as e:
            # the traceback's frames hold the body, and a model load's thread-pool future
            # makes a cycle with it that only a full collection frees
            e.__traceback__ = None
            await _send(send, e.status_code, orjson.dumps(e.to_dict()), _extra(e))
        # anything else goes to RequestTelemetry: a 503/507 for a fault, a logged 500 else

    async def _infer(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        """``POST /v2/models/{name}[/versions/{version}]/infer``, as routes/v2.py answers."""
        parts = path[len(_V2_MODELS) : -len(_V2_SUFFIX)].split("/")
        if len(parts) == 1 and parts[0]:
            (name,), version, route = parts, None, _V2_INFER
        elif len(parts) == 3 and parts[1] == "versions" and parts[0] and parts[2]:
            name, _, version = parts
            route = _V2_VERSION_INFER
        else:  # no infer route has this path: FastAPI's 404 or 405
            return await self.app(scope, receive, send)
        scope["route"] = route
        try:
            headers = Headers(scope=scope)
            tenant = await self.services.authenticate(headers, "predict")
            raw = await _body(receive, self.services.settings.max_body_bytes)
            body, binary, head_length, number = await infer_raw(
                self.inference, name, version, tenant, raw, headers.get(HEADER_LENGTH),
                headers.get(ROUTE_KEY_HEADER))
            del raw
            extra = [] if head_length is None else [(_HEAD_LENGTH, head_length)]
            if number is not None:
                extra.append((_VERSION, number))
            await _send(send, 200, body, extra, _BINARY if binary else _JSON)
        except _ClientGone:
            return
        except ServiceError as e:
            e.__traceback__ = None  # as above
            status, error, _ = error_answer(e)
            await _send(send, status, orjson.dumps(error), _extra(e))




class _ClientGone(Exception):
    """The client disconnected before its body was read."""


async def _body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body exceeds {limit} bytes (FITSERVE_MAX_BODY_BYTES)")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _extra(e: ServiceError) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode(), v.encode()) for k, v in (e.headers or {}).items()]


async def _send(
    send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None,
    media: bytes = _JSON,
) -> None:
    headers = [(b"content-type", media), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status,
                "headers": headers + (extra or [])})
    await send({"type": "http.response.body", "body": body})
