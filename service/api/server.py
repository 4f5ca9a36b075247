"""Runs the app under uvicorn with the HTTP edge bounded (SECURITY.md "Faults: the HTTP edge").

uvicorn bounds how long an idle keep-alive connection stays open, but not how long a client
may take to send a request's head: a byte every few seconds held a connection (and a slot)
for as long as the client liked, and a head of any size was read. ``BoundedHead`` closes a
connection whose request line and headers did not arrive within ``header_timeout_s`` of the
connection's start (or of its previous response's end), and answers 431 to a head past
``HEAD_LIMIT_FACTOR`` times ``max_header_bytes`` before reading more of it. The finer limits
(``max_headers``, ``max_header_bytes``: 431) and the body's deadline (``body_timeout_s``:
408) are ``RequestGuard``'s, in the JSON error shape. The server also bounds its
connections (``max_connections``: a JSON 503 beyond, ``ConnectionLimit``) and its graceful
shutdown (``shutdown_timeout_s``), and tells the services a shutdown began before uvicorn
stops accepting requests.

``FitserveServer`` binds its port before the app's lifespan starts (workers, job recovery):
a busy port ends the start with one line on stderr and exit code 1, and "ready" is logged
only once the port is bound and the app started.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import math
import socket
import time
from types import FrameType
from typing import Any

import orjson
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from service import __version__
from service.config import Settings
from service.errors import Unavailable, error_body
from service.logs import flush_logs

log = logging.getLogger(__name__)

HEAD_LIMIT_FACTOR = 4
"""A request head past this many times ``max_header_bytes`` is refused by the protocol,
unread; between one and this many times, ``RequestGuard`` answers its JSON 431."""


def _refusal(status: int, phrase: str, type_: str, message: str) -> bytes:
    """A whole HTTP response in the JSON error shape, closing the connection."""
    body = orjson.dumps(error_body(type_, message))
    return (f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body


class BoundedHead(asyncio.Protocol):
    """Mixed in before uvicorn's HTTP protocol class (httptools or h11): a deadline and a
    size limit on each request's head. Between requests (no request in progress) the head
    is pending: from the connection's start, and from each response's end."""

    header_timeout: float = 10.0
    head_limit: int = 4 * 32 * 1024

    # uvicorn's protocol classes have these; declared for the type checker
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    cycle: Any

    _head_timer: asyncio.TimerHandle | None = None
    _head_bytes = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self._head_pending():
            self._disarm_head_timer()
            self._head_bytes = 0
            return
        self._head_bytes += len(data)
        if self._head_bytes > self.head_limit and not self.transport.is_closing():
            self._disarm_head_timer()
            self.transport.write(_refusal(
                431, "Request Header Fields Too Large", "headers_too_large",
                f"the request's head exceeds {self.head_limit} bytes "
                "(FITSERVE_MAX_HEADER_BYTES)"))
            self.transport.close()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        if not self.transport.is_closing() and self._head_pending():
            self._head_bytes = 0
            self._arm_head_timer()

    def _head_pending(self) -> bool:
        """No request's head has been read that is not yet answered."""
        return ((self.cycle is None or self.cycle.response_complete)
                and not getattr(self, "pipeline", None))  # httptools queues pipelined ones

    def _arm_head_timer(self) -> None:
        self._disarm_head_timer()
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or not self._head_pending():
            return
        if self._head_bytes:  # a partial head: tell the client why (an idle one just goes)
            self.transport.write(_refusal(
                408, "Request Timeout", "request_timeout",
                f"the request's headers did not come within {self.header_timeout:g} s "
                "(FITSERVE_HEADER_TIMEOUT_S)"))
        self.transport.close()


class BoundedH11(BoundedHead, H11Protocol):
    """h11 (pure Python), when httptools is not installed."""


def protocol_class(settings: Settings) -> type[asyncio.Protocol]:
    """uvicorn's fastest HTTP protocol (httptools, else h11), bounded by ``settings``."""
    base: type[asyncio.Protocol]
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # httptools is not installed
        base = BoundedH11
    else:
        base = type("BoundedHttpTools", (BoundedHead, HttpToolsProtocol), {})
    return type(f"{base.__name__}Protocol", (base,), {
        "header_timeout": settings.header_timeout_s,
        "head_limit": head_limit(settings),
    })


def head_limit(settings: Settings) -> int:
    return HEAD_LIMIT_FACTOR * settings.max_header_bytes


class ConnectionLimit:
    """uvicorn's ``limit_concurrency``, answered in the JSON error shape with ``Retry-After``
    (uvicorn's own answer is a plain-text 503). Outermost, before uvicorn's own wrappers: a
    request is refused while more than ``limit`` connections are open, or more than
    ``limit`` requests are in progress (this one counted)."""

    LOG_EVERY_S = 10.0
    """A flood of refusals is logged once per this many seconds, with its count."""

    def __init__(self, app: Any, state: ServerState, limit: int) -> None:
        self.app = app
        self.state = state
        self.limit = limit
        self._refused = 0
        self._logged_at = -math.inf

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or (len(self.state.connections) <= self.limit
                                       and len(self.state.tasks) <= self.limit):
            await self.app(scope, receive, send)
            return
        self._log_refusal()
        error = Unavailable(
            f"the server is at its limit of {self.limit} open connections "
            "(FITSERVE_MAX_CONNECTIONS); retry shortly", retry_after=1)
        body = orjson.dumps(error.to_dict())
        headers = [(b"content-type", b"application/json"),
                   (b"content-length", str(len(body)).encode()),
                   (b"connection", b"close")]
        headers += [(k.lower().encode(), v.encode()) for k, v in (error.headers or {}).items()]
        await send({"type": "http.response.start", "status": error.status_code,
                    "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _log_refusal(self) -> None:
        self._refused += 1
        now = time.monotonic()
        if now - self._logged_at >= self.LOG_EVERY_S:
            log.warning("refused %d request(s) past the connection limit (%d, "
                        "FITSERVE_MAX_CONNECTIONS)", self._refused, self.limit)
            self._logged_at, self._refused = now, 0


def listen_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host``:``port``, as uvicorn binds one for its workers;
    uvicorn listens on it."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def bind_refusal(host: str, port: int, exc: OSError) -> str:
    """The one line a start that cannot bind its port ends with."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return (f"fitserve: cannot listen on {where}: address already in use; stop the other "
                "server there or set FITSERVE_PORT (or --port)")
    reason = exc.strerror or str(exc)
    return (f"fitserve: cannot listen on {where}: {reason}; "
            "check FITSERVE_HOST and FITSERVE_PORT (or --host, --port)")


class FitserveServer(uvicorn.Server):
    """uvicorn's server. It binds its port before the app's lifespan starts, so that a busy
    port stops it before any worker starts (exit code 1, one line), and logs "ready" once
    serving. On SIGTERM or SIGINT it first tells the app's services that a shutdown began
    (long polls and event streams end at once), then stops as uvicorn does."""

    def __init__(self, config: uvicorn.Config, app: Any) -> None:
        super().__init__(config)
        self._app = app
        self._told = False

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        config = self.config
        if config.limit_concurrency is not None:  # answered by ConnectionLimit instead
            config.loaded_app = ConnectionLimit(config.loaded_app, self.server_state,
                                                config.limit_concurrency)
            config.limit_concurrency = None
        if sockets is None:
            try:
                sockets = [listen_socket(config.host, config.port)]
            except OSError as e:
                self._close_app()
                raise SystemExit(bind_refusal(config.host, config.port, e)) from None
        await super().startup(sockets=sockets)
        if self.started:
            host, port = sockets[0].getsockname()[:2]
            log.info("fitserve %s ready on %s:%s", __version__, host, port)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await super().shutdown(sockets=sockets)
        # uvicorn then raises the signal it caught again, and the process ends without its
        # exit handlers: the log lines still queued for the writer thread go out first
        flush_logs()

    def _close_app(self) -> None:
        """What the app's lifespan would have closed, for a start that ends before it: the
        worker pool (its data-dir lock, its semaphores; no worker was started yet) and the
        database's connections."""
        services = getattr(getattr(self._app, "state", None), "services", None)
        queue = getattr(services, "queue", None)
        try:
            if queue is not None:
                queue.stop()
            if services is not None:
                services.meta.dispose()
        except Exception:  # the start fails with its own line all the same
            log.exception("could not close the app's services")

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self._told:
            self._told = True
            services = getattr(getattr(self._app, "state", None), "services", None)
            begin = getattr(services, "begin_shutdown", None)
            if callable(begin):
                try:
                    begin()
                except Exception:  # a failed notice must not stop the shutdown itself
                    log.exception("begin_shutdown failed")
        super().handle_exit(sig, frame)


def server_config(app: Any, settings: Settings) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=protocol_class(settings),
        log_config=None,
        access_log=False,  # RequestTelemetry writes the access log
        log_level=settings.log_level,
        limit_concurrency=settings.max_connections,
        h11_max_incomplete_event_size=head_limit(settings),
        timeout_graceful_shutdown=math.ceil(settings.shutdown_timeout_s),
    )


def run_server(app: Any, settings: Settings) -> None:
    """Serve ``app`` on ``settings.host``:``settings.port`` until SIGTERM or SIGINT."""
    FitserveServer(server_config(app, settings), app).run()
