"""One pure ASGI layer per request: the request id, the access log line and the metrics.

Pure ASGI rather than ``BaseHTTPMiddleware``: that one runs the app in a separate task and
buffers through memory streams, which costs the predict path more than everything here.
"""

from __future__ import annotations

import itertools
import logging
import re
import secrets
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import logs
from service.telemetry import Telemetry

access_log = logging.getLogger("service.access")

REQUEST_ID_HEADER = b"x-request-id"
# an incoming id is echoed into logs and headers, so only a short, plain one is taken
_VALID_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")


def _incoming_id(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == REQUEST_ID_HEADER:
            return value.decode("ascii") if _VALID_ID.fullmatch(value) else None
    return None


def _log_request(rid: str, method: str, path: str, status: int, elapsed: float) -> None:
    # a record made here and handed on: Logger.info would also walk the stack to find its
    # caller, a third of its cost, for a line whose caller is always this one
    record = logging.LogRecord(access_log.name, logging.INFO, __file__, 0, "%s %s %s",
                               (method, path, status), None)
    record.request_id = rid
    record.method = method
    record.path = path
    record.status = status
    record.duration_ms = round(elapsed * 1000, 3)
    access_log.handle(record)


_MODELS, _PREDICT = "/v1/models/", "/predict"


def route_template(scope: Scope) -> str:
    """The route's template (/v1/jobs/{job_id}), never the raw path: one series per route."""
    route = scope.get("route")
    if route is not None:
        return str(route.path)
    # the predict fast lane (predict_lane.py) answers these before routing sets the route
    path: str = scope["path"]
    if path == _PREDICT:
        return _PREDICT
    if (path.startswith(_MODELS) and path.endswith(_PREDICT)
            and "/" not in path[len(_MODELS):-len(_PREDICT)]):
        return "/v1/models/{model_id}/predict"
    return "unmatched"


class RequestTelemetry:
    def __init__(self, app: ASGIApp, telemetry: Telemetry, log_requests: bool = True) -> None:
        self.app = app
        self.observe = telemetry.observe_request
        self.log_requests = log_requests
        # ids unique across processes and restarts without a random draw per request: a
        # random prefix per process, then a counter
        self._id_prefix = secrets.token_hex(4)
        self._ids = itertools.count(1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = _incoming_id(scope["headers"]) or f"{self._id_prefix}{next(self._ids):08x}"
        # request.state.request_id, for handlers (the 500 handler quotes it)
        scope.setdefault("state", {})["request_id"] = rid
        token = logs.request_id.set(rid)
        rid_header = (REQUEST_ID_HEADER, rid.encode("ascii"))
        status = 500  # what the client gets when the app raises before answering
        start = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), rid_header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - start
            self.observe(scope["method"], route_template(scope), status, elapsed)
            if self.log_requests and access_log.isEnabledFor(logging.INFO):
                _log_request(rid, scope["method"], scope["path"], status, elapsed)
            logs.request_id.reset(token)
