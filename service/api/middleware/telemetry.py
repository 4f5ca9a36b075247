"""One pure ASGI layer per request: the request id, the access log line and the metrics, the
last word on errors, and memory returned after large requests.

Pure ASGI rather than ``BaseHTTPMiddleware``: that one runs the app in a separate task and
buffers through memory streams, which costs the predict path more than everything here.

Errors: an exception no handler turned into a response ends here, answered in the JSON error
shape (500, or the 503/507 of ``service.errors.fault_of``) and *not* re-raised: Starlette's
``ServerErrorMiddleware`` re-raises after its handler, and uvicorn then closes the connection,
so the client's next request on it met a reset. A client that went away mid-request is a 499
("client closed request") in the log and the metrics, without a traceback.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import itertools
import logging
import re
import secrets
import time
from collections.abc import Callable

import orjson
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import logs
from service.errors import error_body, fault_of
from service.telemetry import Telemetry

access_log = logging.getLogger("service.access")
log = logging.getLogger(__name__)

CLIENT_CLOSED = 499
"""The status logged and counted for a request whose client went away before its answer."""

LARGE_BODY_BYTES = 1 << 20
"""A request body at least this large returns memory to the system after its response."""

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


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None (another libc)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


def release_memory(trim: Callable[[int], int] | None = None) -> None:
    """Collect reference cycles, then hand the freed heap back to the system: glibc keeps
    what large requests freed (in several arenas, one per thread that used it) otherwise."""
    gc.collect()
    if trim is not None:
        trim(0)


class MemoryReturn:
    """``release_memory`` off the event loop after a large request: at most once per
    ``interval`` seconds, and once more after the last request that asked for it."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._trim = _malloc_trim()
        self._next = 0.0  # loop time before which no run starts
        self._busy = False  # a run scheduled or running
        self._dirty = False  # asked for since the last run started

    def request(self) -> None:
        self._dirty = True
        if not self._busy:
            self._schedule(asyncio.get_running_loop())

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        self._busy = True
        loop.call_later(max(0.0, self._next - loop.time()), self._start, loop)

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._dirty = False
        future = loop.run_in_executor(None, release_memory, self._trim)
        future.add_done_callback(lambda f: self._done(loop, f))

    def _done(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]) -> None:
        if not future.cancelled() and future.exception() is not None:
            log.debug("returning memory failed", exc_info=future.exception())
        self._next = loop.time() + self.interval
        self._busy = False
        if self._dirty and not loop.is_closed():
            self._schedule(loop)


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for e in exc.exceptions for leaf in _leaves(e)]
    return [exc]


def _forget(exc: BaseException) -> None:
    """Drop the tracebacks of ``exc`` and what it chains: their frames hold the request's
    body and, through a thread pool's future, form cycles only a full collection frees."""
    seen: set[int] = set()
    stack = [exc]
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        e.__traceback__ = None
        stack.extend(x for x in (e.__cause__, e.__context__) if x is not None)
        if isinstance(e, BaseExceptionGroup):
            stack.extend(e.exceptions)


class RequestTelemetry:
    def __init__(self, app: ASGIApp, telemetry: Telemetry, log_requests: bool = True) -> None:
        self.app = app
        self.observe = telemetry.observe_request
        self.log_requests = log_requests
        # ids unique across processes and restarts without a random draw per request: a
        # random prefix per process, then a counter
        self._id_prefix = secrets.token_hex(4)
        self._ids = itertools.count(1)
        self.memory = MemoryReturn()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = _incoming_id(scope["headers"]) or f"{self._id_prefix}{next(self._ids):08x}"
        # request.state.request_id, for handlers (the 500 handler quotes it)
        scope.setdefault("state", {})["request_id"] = rid
        token = logs.request_id.set(rid)
        rid_header = (REQUEST_ID_HEADER, rid.encode("ascii"))
        status = 0  # 0 until the response starts
        received = 0
        gone = False
        start = time.perf_counter()

        async def receive_counted() -> Message:
            nonlocal received, gone
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
            elif message["type"] == "http.disconnect":
                gone = True
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), rid_header]
            await send(message)

        try:
            await self.app(scope, receive_counted, send_with_id)
        except Exception as exc:  # the last word: answered here, never re-raised
            if gone or any(isinstance(e, ClientDisconnect) for e in _leaves(exc)):
                gone = True
                log.info("the client closed the request on %s %s (%s)", scope["method"],
                         scope["path"], type(exc).__name__)
            elif status:
                log.error("unhandled error on %s %s after the response started",
                          scope["method"], scope["path"], exc_info=exc)
            else:
                status = await self._answer(exc, scope, rid, send_with_id)
            _forget(exc)
        else:
            if not status and not gone:  # uvicorn would answer a plain-text 500
                log.error("no response to %s %s", scope["method"], scope["path"])
                status = await self._answer(None, scope, rid, send_with_id)
        finally:
            if not status:  # the client went away first (or the task was cancelled)
                status = CLIENT_CLOSED if gone else 500
            elapsed = time.perf_counter() - start
            self.observe(scope["method"], route_template(scope), status, elapsed)
            if self.log_requests and access_log.isEnabledFor(logging.INFO):
                _log_request(rid, scope["method"], scope["path"], status, elapsed)
            logs.request_id.reset(token)
            if received >= LARGE_BODY_BYTES:
                self.memory.request()

    @staticmethod
    async def _answer(exc: BaseException | None, scope: Scope, rid: str, send: Send) -> int:
        """The JSON error answer to ``exc`` (an unexpected error: 500, or a fault: 503/507);
        returns its status."""
        fault = next((f for f in map(fault_of, _leaves(exc)) if f is not None), None) \
            if exc is not None else None
        if fault is not None:
            log.warning("%s %s: %s (%s)", scope["method"], scope["path"], fault.message,
                        type(exc).__name__)
            status, body = fault.status_code, fault.to_dict()
            headers = [(k.lower().encode("latin-1"), v.encode("latin-1"))
                       for k, v in (fault.headers or {}).items()]
        else:
            if exc is not None:
                log.error("unhandled error on %s %s", scope["method"], scope["path"],
                          exc_info=exc)
            status, headers = 500, []
            body = error_body("internal_error",
                              f"internal error; the server log has it (request id {rid})")
        raw = orjson.dumps(body)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(raw)).encode()), *headers]})
        await send({"type": "http.response.body", "body": raw})
        return status
