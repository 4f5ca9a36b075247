"""A pure ASGI guard in front of every route: the Host a request names, the Origin of
state-changing browser requests (DNS rebinding, CSRF), the size and count of its headers
(431), the body size (413), and how long the body may take to come (408)."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import urlsplit

import orjson
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.auth.keys import is_loopback
from service.config import Settings
from service.errors import error_body

_SWEEP_S = 0.5
_LINGER_S, _LINGER_GAP_S = 2.0, 0.5
"""A refusal that closes the connection while the client is still sending its body reads
(and drops) the rest for up to ``_LINGER_S`` (each part within ``_LINGER_GAP_S``) before the
close, as nginx's lingering close does: a close with data unread makes the kernel answer the
client with a reset, which can overtake the answer and leave the client with no 413 at all."""
"""How often reads of request bodies are checked against the body deadline."""
_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
_STREAMED = frozenset({("POST", "/v1/datasets")})
"""Routes that read a chunked body as a stream and count it against the limits themselves
(dataset uploads go to a spool file: buffering them here would hold them in memory)."""


class RequestGuard:
    def __init__(self, app: ASGIApp, settings: Settings, services: Any = None) -> None:
        self.app = app
        self._reading: set[_TimedBody] = set()  # requests whose body is still coming
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watching = False  # the sweep of slow bodies is scheduled
        if services is not None:  # SIGTERM: bodies still coming are answered 503 at once
            services.shutdown_hooks.append(self._end_reads)
        self.limit = settings.max_body_bytes
        self.max_headers = settings.max_headers
        self.max_header_bytes = settings.max_header_bytes
        self.body_timeout = settings.body_timeout_s
        self.origins = {o.rstrip("/").lower() for o in settings.allowed_origins}
        if settings.trusted_hosts is not None:
            self.hosts: frozenset[str] | None = frozenset(h.lower() for h in
                                                          settings.trusted_hosts)
        elif is_loopback(settings.host):
            self.hosts = _LOOPBACK_NAMES
        else:
            self.hosts = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        raw_headers: list[tuple[bytes, bytes]] = scope["headers"]
        if len(raw_headers) > self.max_headers:
            return await _refuse(send, 431, "headers_too_large",
                                 f"{len(raw_headers)} headers exceed the limit of "
                                 f"{self.max_headers} (FITSERVE_MAX_HEADERS)", close=True)
        head = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"") + \
            sum(len(n) + len(v) + 4 for n, v in raw_headers)
        if head > self.max_header_bytes:
            return await _refuse(send, 431, "headers_too_large",
                                 f"the request's headers ({head} bytes) exceed the limit of "
                                 f"{self.max_header_bytes} (FITSERVE_MAX_HEADER_BYTES)",
                                 close=True)
        headers = Headers(raw=raw_headers)
        host = headers.get("host", "").lower()
        if self.hosts is not None and _hostname(host) not in self.hosts:
            return await _refuse(send, 403, "forbidden",
                                 f"the Host {host!r} is not served here (FITSERVE_TRUSTED_HOSTS)")
        if scope["method"] in _UNSAFE:
            origin = headers.get("origin", "").rstrip("/").lower()
            if origin and origin != "null" and not self._same_origin(origin, host) and \
                    origin not in self.origins:
                return await _refuse(send, 403, "forbidden",
                                     f"cross-origin {scope['method']} from {origin!r} refused "
                                     "(FITSERVE_ALLOWED_ORIGINS)")
            if origin == "null":
                return await _refuse(send, 403, "forbidden", "requests from an opaque origin "
                                     "are refused")
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await _refuse(send, 413, "payload_too_large",
                                 f"the body of {int(length)} bytes exceeds the limit of "
                                 f"{self.limit} (FITSERVE_MAX_BODY_BYTES)")
        if (length is None or length == "0") and "transfer-encoding" not in headers:
            return await self.app(scope, receive, send)  # no body: nothing to wait for
        timed = _TimedBody(receive, send, self.body_timeout)
        self._reading.add(timed)
        if not self._watching:  # one timer for all bodies, not one per request
            self._watching = True
            self._loop = asyncio.get_running_loop()
            self._loop.call_later(_SWEEP_S, self._expire_slow_bodies)
        try:
            if length is None and scope["method"] in _UNSAFE and \
                    (scope["method"], scope["path"]) not in _STREAMED:
                # a chunked body: read it here, up to the limit, and hand it on; the app would
                # turn an error raised mid-read into a 400 (FastAPI) or a 500
                messages = await self._buffer(timed.receive)
                if messages is None:
                    return await _refuse(timed.send, 413, "payload_too_large",
                                         f"the body exceeds the limit of {self.limit} bytes "
                                         "(FITSERVE_MAX_BODY_BYTES)", close=True)
                await self.app(scope, _replay(messages, timed.receive), timed.send)
            else:
                await self.app(scope, timed.receive, timed.send)
        except Exception:
            if not timed.timed_out:  # the app saw "disconnect" after the 408: its error
                raise
        finally:
            self._reading.discard(timed)

    def _end_reads(self) -> None:
        """From any thread (the signal handler's): stop every body read in progress."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._stop_reads)

    def _stop_reads(self) -> None:
        for timed in list(self._reading):
            timed.stop()

    def _expire_slow_bodies(self) -> None:
        """Every ``_SWEEP_S`` while bodies are coming: a read that has waited longer than
        the body deadline ends (408)."""
        now = time.monotonic()
        for timed in list(self._reading):
            if timed.since is not None and now - timed.since > timed.timeout:
                timed.expire()
        if self._reading and self._loop is not None and not self._loop.is_closed():
            self._loop.call_later(_SWEEP_S, self._expire_slow_bodies)
        else:
            self._watching = False

    async def _buffer(self, receive: Receive) -> list[Message] | None:
        messages: list[Message] = []
        seen = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return messages
            seen += len(message.get("body", b""))
            if seen > self.limit:
                return None
            if not message.get("more_body", False):
                return messages

    @staticmethod
    def _same_origin(origin: str, host: str) -> bool:
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and parts.netloc == host


class _TimedBody:
    """``receive`` with a deadline on each part of the body: past ``timeout`` seconds the
    client gets a 408 (when no response has started), the app sees it as gone, and whatever
    the app sends after that is dropped. Once the body is complete, ``receive`` (which then
    waits for a disconnect) has no deadline. The guard's sweep, not a timer per request,
    ends a wait past the deadline (``expire``), and a server that stops ends every wait
    (``stop``: 503, send again)."""

    def __init__(self, receive: Receive, send: Send, timeout: float) -> None:
        self._receive = receive
        self._send = send
        self.timeout = timeout
        self.body_done = False
        self.started = False
        self.timed_out = False
        self.stopping = False
        self.expired = False
        self.since: float | None = None  # when the read in progress began
        self.closing = False  # the answer closes the connection: linger before the close
        self._waiting: asyncio.Task[Any] | None = None

    def stop(self) -> None:
        """The server is stopping: a body still coming is not waited for (503, retry)."""
        self.stopping = True
        if self._waiting is not None:
            self._waiting.cancel()

    def expire(self) -> None:
        """The read in progress has waited past the deadline."""
        self.expired = True
        if self._waiting is not None:
            self._waiting.cancel()

    async def receive(self) -> Message:
        if self.timed_out:
            return {"type": "http.disconnect"}
        if self.body_done:
            return await self._receive()
        if self.stopping:
            return await self._stopped()
        self._waiting = asyncio.current_task()
        self.since = time.monotonic()
        try:
            message = await self._receive()
        except asyncio.CancelledError:
            if not (self.stopping or self.expired) or self._waiting is None:
                raise
            self._waiting.uncancel()
            return await (self._stopped() if self.stopping else self._timed_out())
        finally:
            self._waiting = None
            self.since = None
        if message["type"] != "http.request" or not message.get("more_body", False):
            self.body_done = True
        return message

    async def _timed_out(self) -> Message:
        self.timed_out = True
        if not self.started:
            self.started = True
            await _refuse(self._send, 408, "request_timeout",
                          f"no part of the request body came for {self.timeout:g} s "
                          "(FITSERVE_BODY_TIMEOUT_S)", close=True)
        return {"type": "http.disconnect"}

    async def _stopped(self) -> Message:
        self.timed_out = True  # from here the app sees the client gone, and says nothing
        if not self.started:
            self.started = True
            await _refuse(self._send, 503, "unavailable",
                          "the server is stopping; send the request again in a moment",
                          close=True, retry_after=5)
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if self.timed_out:
            return
        if message["type"] == "http.response.start":
            self.started = True
            self.closing = (b"connection", b"close") in (
                (k.lower(), v.lower()) for k, v in message.get("headers", ()))
        elif message["type"] == "http.response.body" and self.closing and \
                not message.get("more_body", False) and not self.body_done:
            await self._send({**message, "more_body": True})  # the answer goes out whole
            await self._linger()
            message = {"type": "http.response.body", "body": b""}  # then the close
        await self._send(message)

    async def _linger(self) -> None:
        """Read and drop what is left of the body, within the linger's bounds."""
        deadline = time.monotonic() + _LINGER_S
        while not self.stopping:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                message = await asyncio.wait_for(self._receive(), min(left, _LINGER_GAP_S))
            except TimeoutError:
                return
            if message["type"] != "http.request" or not message.get("more_body", False):
                self.body_done = True
                return


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replay() -> Message:
        return pending.pop(0) if pending else await receive()

    return replay


def _hostname(host: str) -> str:
    if host.startswith("["):
        return host.split("]")[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


async def _refuse(send: Send, status: int, type_: str, message: str, *,
                  close: bool = False, retry_after: int | None = None) -> None:
    """The JSON error answer; ``close``: the connection is closed after it (the rest of
    the request, unread, cannot be told from a next one)."""
    body = orjson.dumps(error_body(type_, message))
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
