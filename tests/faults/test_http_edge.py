"""Faults at the HTTP edge, against a real server: input that made 500s, clients that go away
mid-body, an unexpected error on a keep-alive connection, slow and hostile clients (issue
17, items 6 and 9). The invariants are checked after each."""

from __future__ import annotations

import json
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.api.server import FitserveServer, server_config
from service.config import Settings
from service.main import create_app
from tests.e2e.conftest import ServerProcess, module_server
from tests.faults.invariants import check_invariants
from tests.helpers import wait_for

pytestmark = pytest.mark.e2e

EDGE_ENV = {"FITSERVE_HEADER_TIMEOUT_S": "1", "FITSERVE_BODY_TIMEOUT_S": "1"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the module, its header and body deadlines at 1 s."""
    yield from module_server(tmp_path_factory, "edge", 0, **EDGE_ENV)


def _connect(server: ServerProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    return sock


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP response from ``sock`` (status, headers, body), read to its length."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a response: {data!r}")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, body


def _access_log(server: ServerProcess) -> list[dict]:
    out = []
    for line in server.log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def _error(body: bytes) -> dict:
    doc = json.loads(body)
    assert set(doc) == {"error"} and {"type", "message"} <= set(doc["error"]), doc
    return doc["error"]


# ---------------------------------------------------------------- 500s from input (item 6)


def test_a_csv_cell_past_the_csv_modules_limit_is_a_422_naming_line_and_column(server):
    cell = "7" * 100 + "x" * (200 * 1024)  # past the csv module's 128 KiB field limit
    body = f"a,y\n1,2\n3,{cell}\n4,5\n".encode()
    r = httpx.post(f"{server.url}/v1/datasets?target=y", content=body,
                   headers={"content-type": "text/csv"}, timeout=60)
    assert r.status_code == 422, r.text[:300]
    error = r.json()["error"]
    assert "line 3" in error["message"] and "column 2" in error["message"], error
    assert len(r.text) < 500 and "7" * 50 not in r.text  # the cell is not echoed
    assert "7" * 50 not in server.log.read_text(errors="replace")
    check_invariants(server, [])


@pytest.mark.parametrize("path", ["/v1/datasets?target=y", "/v2/models/m/infer", "/predict"])
def test_a_client_gone_mid_body_is_a_499_not_a_500(server, path):
    rid = f"gone-{uuid.uuid4().hex}"
    seen = len(_access_log(server))
    with _connect(server) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-ID: {rid}\r\n"
                     "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
                     .encode() + b"[" * 5000)
        # closed with 95 % of the declared body unsent (whether or not the app began on it)
    entry = wait_for(lambda: next((e for e in _access_log(server)[seen:]
                                   if e.get("request_id") == rid and "status" in e), None),
                     timeout=20)
    assert entry["status"] == 499, entry
    errors = [e for e in _access_log(server)[seen:] if e.get("level") == "error" or "exc" in e]
    assert not errors, errors
    check_invariants(server, [])


def _boom_app(settings: Settings):
    """The app with routes that fail unexpectedly, for an in-process server."""
    import sqlalchemy.exc

    app = create_app(settings, start_workers=False)

    def boom(kind: str) -> None:
        if kind == "bug":
            raise RuntimeError("a bug")
        if kind == "disk":
            raise OSError(28, "No space left on device")
        raise sqlalchemy.exc.OperationalError("INSERT", {}, Exception("database is locked"))

    app.add_api_route("/boom/{kind}", boom, methods=["GET"])
    return app


@contextmanager
def _inprocess_server(app: Any, settings: Settings) -> Iterator[str]:
    """``app`` under ``run_server``'s uvicorn, in a thread; yields its URL."""
    server = FitserveServer(server_config(app, settings), app)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, timeout=30)
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(15)


def _inprocess_settings(tmp_path: Path, **fields: Any) -> Settings:
    return Settings(data_dir=tmp_path / "data", workers=0, device="cpu", port=0, **fields)


@pytest.fixture
def inprocess(tmp_path: Path) -> Iterator[str]:
    """The app with failing routes under ``run_server``'s uvicorn, in a thread."""
    settings = _inprocess_settings(tmp_path)
    with _inprocess_server(_boom_app(settings), settings) as url:
        yield url


@pytest.mark.parametrize(("kind", "status", "type_"), [
    ("bug", 500, "internal_error"),
    ("disk", 507, "insufficient_storage"),
    ("db", 503, "unavailable"),
])
def test_an_unexpected_error_answers_json_and_keeps_the_connection(inprocess, kind, status,
                                                                   type_):
    with httpx.Client(base_url=inprocess, timeout=30) as http:
        r = http.get(f"/boom/{kind}")
        assert r.status_code == status, r.text
        assert r.json()["error"]["type"] == type_
        if status != 500:
            assert int(r.headers["retry-after"]) > 0
        first = r.extensions["network_stream"].get_extra_info("socket").getsockname()
        again = http.get("/healthz")
        assert again.status_code == 200
        # the same keep-alive connection: uvicorn closed it after a re-raised error before
        assert again.extensions["network_stream"].get_extra_info("socket").getsockname() \
            == first


# ---------------------------------------------------------------- slow and hostile (item 9)


def test_past_the_connection_limit_a_json_503_with_retry_after(tmp_path: Path):
    """uvicorn's own answer past ``limit_concurrency`` is a plain-text 503."""
    settings = _inprocess_settings(tmp_path, max_connections=2)
    with _inprocess_server(create_app(settings, start_workers=False), settings) as url:
        address = ("127.0.0.1", int(url.rsplit(":", 1)[1]))
        held = [socket.create_connection(address, timeout=30) for _ in range(2)]
        try:
            for sock in held:  # each a head begun: open, no request yet
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            with socket.create_connection(address, timeout=30) as third:
                third.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                status, headers, body = _read_response(third)
                assert third.recv(10) == b""  # and the connection is closed
        finally:
            for sock in held:
                sock.close()
        assert status == 503, body
        assert headers["content-type"] == "application/json"
        assert headers["retry-after"] == "1" and headers["connection"] == "close"
        error = _error(body)
        assert error["type"] == "unavailable" and "FITSERVE_MAX_CONNECTIONS" in error["message"]
        # the held connections gone, requests are served again
        wait_for(lambda: httpx.get(f"{url}/healthz", timeout=10).status_code == 200, timeout=10)


def test_slowloris_connections_are_closed_while_others_are_served(server):
    socks = []
    for i in range(40):
        s = _connect(server)
        s.sendall(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow-{i}: ".encode())
        socks.append(s)
    closed: set[int] = set()
    answers: dict[int, bytes] = {}
    stop = threading.Event()

    def trickle() -> None:  # a header byte every 0.3 s on each open connection
        while not stop.is_set() and len(closed) < len(socks):
            for i, s in enumerate(socks):
                if i in closed:
                    continue
                try:
                    s.sendall(b"a")
                except OSError:
                    closed.add(i)
            stop.wait(0.3)

    def drain() -> None:  # what the server sends, until it closes each connection
        for i, s in enumerate(socks):
            data = b""
            try:
                while chunk := s.recv(65536):
                    data += chunk
            except TimeoutError:  # still held after the socket's 30 s: not closed
                continue
            except OSError:  # reset by the server: closed
                pass
            answers[i] = data
            closed.add(i)

    threads = [threading.Thread(target=trickle), threading.Thread(target=drain)]
    for t in threads:
        t.start()
    try:
        assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
        wait_for(lambda: len(answers) == len(socks), timeout=20, every=0.1)
        assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
    finally:
        stop.set()
        for s in socks:
            s.close()
        for t in threads:
            t.join(30)
    timed_out = [a for a in answers.values() if a.startswith(b"HTTP/1.1 408")]
    assert timed_out, answers
    assert _error(timed_out[0].split(b"\r\n\r\n", 1)[1])["type"] == "request_timeout"
    check_invariants(server, [])


def test_a_declared_body_that_does_not_come_is_a_408(server):
    # each path, with none or part of its body sent; the four wait out the deadline together
    cases = [(path, sent) for path in ("/v1/datasets?target=y", "/predict")
             for sent in (b"", b"x,y\n1,")]
    socks = [_connect(server) for _ in cases]
    try:
        for sock, (path, sent) in zip(socks, cases, strict=True):
            sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                         "text/csv\r\nContent-Length: 1000\r\n\r\n".encode() + sent)
        for sock, case in zip(socks, cases, strict=True):
            status, headers, body = _read_response(sock)  # the socket's timeout is 30 s
            assert status == 408, (case, body)
            assert _error(body)["type"] == "request_timeout"
            assert headers.get("connection") == "close"
            assert sock.recv(10) == b"", case  # and the connection is closed
    finally:
        for sock in socks:
            sock.close()
    check_invariants(server, [])


def test_a_1_mb_header_is_refused_without_a_500(server):
    with _connect(server) as sock:
        try:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " +
                         b"a" * (1 << 20) + b"\r\n\r\n")
        except OSError:  # the server closed the connection while the head came: refused
            pass
        try:
            status, _, body = _read_response(sock)
        except OSError:
            status, body = 0, b""
    assert status in (0, 431), body[:300]
    if status:
        assert _error(body)["type"] == "headers_too_large"
    assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
    check_invariants(server, [])


@pytest.mark.parametrize(("count", "size"), [(1000, 4), (3, 20_000)])
def test_too_many_or_too_large_headers_are_a_431(server, count, size):
    headers = [(f"x-h-{i}", "v" * size) for i in range(count)]
    r = httpx.get(f"{server.url}/healthz", headers=headers, timeout=10)
    assert r.status_code == 431, r.text[:300]
    assert r.json()["error"]["type"] == "headers_too_large"
    assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
    check_invariants(server, [])


def test_a_signal_tells_the_services_before_uvicorn_stops(tmp_path, monkeypatch):
    """SIGTERM/SIGINT: ``Services.begin_shutdown`` (long polls and streams end at once) is
    called before uvicorn's own handling, once; an app without it stops all the same."""
    import signal
    from types import SimpleNamespace

    from sse_starlette.sse import AppStatus

    # uvicorn's handle_exit, as sse-starlette patches it, ends every event stream of this
    # process: put that flag back for the tests that run here after this one
    monkeypatch.setattr(AppStatus, "should_exit", False)

    calls: list[str] = []
    services = SimpleNamespace(begin_shutdown=lambda: calls.append("begin"))
    settings = Settings(data_dir=tmp_path / "data", workers=0, device="cpu")
    app = SimpleNamespace(state=SimpleNamespace(services=services))
    server = FitserveServer(server_config(app, settings), app)
    server.handle_exit(signal.SIGTERM, None)
    server.handle_exit(signal.SIGTERM, None)
    assert calls == ["begin"] and server.should_exit
    bare = FitserveServer(server_config(object(), settings), object())
    bare.handle_exit(signal.SIGTERM, None)
    assert bare.should_exit
