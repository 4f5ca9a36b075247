"""A pure ASGI guard in front of every route: the Host a request names, the Origin of
state-changing browser requests (DNS rebinding, CSRF), and the body size."""

from __future__ import annotations

from urllib.parse import urlsplit

import orjson
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.auth.keys import is_loopback
from service.config import Settings
from service.errors import error_body

_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


class RequestGuard:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.limit = settings.max_body_bytes
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
        headers = Headers(scope=scope)
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
        if length is None and scope["method"] in _UNSAFE:
            # a chunked body: read it here, up to the limit, and hand it on; the app would
            # turn an error raised mid-read into a 400 (FastAPI) or a 500
            messages = await self._buffer(receive)
            if messages is None:
                return await _refuse(send, 413, "payload_too_large",
                                     f"the body exceeds the limit of {self.limit} bytes "
                                     "(FITSERVE_MAX_BODY_BYTES)")
            receive = _replay(messages, receive)
        await self.app(scope, receive, send)

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


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replay() -> Message:
        return pending.pop(0) if pending else await receive()

    return replay


def _hostname(host: str) -> str:
    if host.startswith("["):
        return host.split("]")[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


async def _refuse(send: Send, status: int, type_: str, message: str) -> None:
    body = orjson.dumps(error_body(type_, message))
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
