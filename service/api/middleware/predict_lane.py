"""A pure ASGI fast lane for the two predict routes.

FastAPI's routing, dependency resolution and response machinery cost more than a linear
model's prediction; for the routes other services call in a loop, this lane reads the body,
runs the same validation and prediction as the FastAPI routes (service/serving/predict.py), and
writes the orjson bytes itself. The FastAPI routes stay for the OpenAPI docs and behave the
same; any other request passes straight through.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import PayloadTooLarge, ServiceError
from service.serving.predict import parse_predict_body, predict_result

log = logging.getLogger(__name__)

_MODELS = "/v1/models/"
_SUFFIX = "/predict"


class PredictLane:
    def __init__(self, app: ASGIApp, services: Any) -> None:
        self.app = app
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        path: str = scope["path"]
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
            result = await predict_result(self.services.predictor, tenant, ref, x)
            await _send(send, 200, orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY))
        except _ClientGone:
            return  # nobody to answer; the telemetry layer logs it as a 499
        except ServiceError as e:
            # the traceback's frames hold the body, and a model load's thread-pool future
            # makes a cycle with it that only a full collection frees
            e.__traceback__ = None
            extra = [(k.lower().encode(), v.encode()) for k, v in (e.headers or {}).items()]
            await _send(send, e.status_code, orjson.dumps(e.to_dict()), extra)
        # anything else goes to RequestTelemetry: a 503/507 for a fault, a logged 500 else


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


async def _send(
    send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status,
                "headers": headers + (extra or [])})
    await send({"type": "http.response.body", "body": body})
