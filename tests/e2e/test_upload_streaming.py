"""Uploads stream (issue 12), against the real server: a ~30 MB CSV is spooled and parsed
off the event loop (``/healthz`` answers throughout, see STALL), the server's peak RSS
for it stays within 3x the stored arrays (read from /proc, the server's, not ours); a ~10 MB
JSON body is parsed in a child process (orjson holds the GIL: in a thread it would stall
the loop); a JSON body over its limit is answered 413 on its headers, and the rest of it is
read and dropped before the connection closes (no reset overtakes the 413)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest

pytestmark = pytest.mark.e2e

JSON_LIMIT = 16 << 20
STALL = 0.25
"""The slowest /healthz allowed during an upload. A parse that holds the event loop (or the
GIL) stalls it for the whole parse: over a second for these bodies (1.1 s for the JSON one
parsed in a thread). Below that, a busy 2-core machine adds its own scheduling delays: on
a quiet one the worst poll is well under 100 ms, under a loaded suite up to 135 ms was seen."""


def _csv(target_mb: int = 30) -> bytes:
    """Numbers in the form a CSV writer gives (``%.7g``): one block of rows, repeated."""
    rng = np.random.default_rng(0)
    block = rng.standard_normal((5_000, 16)).astype(np.float32)
    lines = "".join(",".join(f"{v:.7g}" for v in row) + "\n" for row in block.tolist())
    raw = lines.encode()
    header = (",".join(f"f{i}" for i in range(15)) + ",y\n").encode()
    return header + raw * max(1, round(target_mb * 2**20 / len(raw)))


def _json_body(target_mb: int = 10) -> bytes:
    rng = np.random.default_rng(1)
    rows = target_mb * 2**20 // 40
    x = np.round(rng.standard_normal((rows, 2)), 5)
    return orjson.dumps({"x": x, "y": x[:, :1] * 2.0 + 1.0},
                        option=orjson.OPT_SERIALIZE_NUMPY)


def _watch(server_url: str, send) -> tuple[httpx.Response, float, int]:
    """Send an upload in a thread while ``/healthz`` is polled: (its answer, the slowest
    healthz in seconds, how many were made)."""
    result: dict[str, httpx.Response] = {}

    def upload() -> None:
        with httpx.Client(base_url=server_url, timeout=120) as up:
            result["r"] = send(up)

    t = threading.Thread(target=upload)
    worst, polls = 0.0, 0
    with httpx.Client(base_url=server_url, timeout=60) as http:
        t.start()
        while t.is_alive():
            t0 = time.perf_counter()
            assert http.get("/healthz").status_code == 200
            worst = max(worst, time.perf_counter() - t0)
            polls += 1
            time.sleep(0.01)
    t.join()
    return result["r"], worst, polls


def _status(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


def test_a_large_csv_streams_without_stalling_the_server_or_its_memory(server_factory):
    server = server_factory(workers=0, FITSERVE_MAX_JSON_BODY_BYTES=str(JSON_LIMIT)).start()
    assert server.proc is not None
    pid = server.proc.pid
    body = _csv()
    with httpx.Client(base_url=server.url, timeout=60) as http:
        http.post("/v1/datasets?target=y", content=body[: 4 << 20].rsplit(b"\n", 1)[0] + b"\n",
                  headers={"content-type": "text/csv"}).raise_for_status()  # warm: imports
        for _ in range(20):
            http.get("/healthz")
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS from here
        before = _status(pid)["VmRSS"]
        r, worst, polls = _watch(server.url, lambda up: up.post(
            "/v1/datasets?target=y", headers={"content-type": "text/csv"},
            content=(body[i : i + (1 << 20)] for i in range(0, len(body), 1 << 20))))
        assert r.status_code == 201, r.text
        peak = _status(pid)["VmHWM"]
    stored = r.json()["size_bytes"]
    assert r.json()["rows"] * 16 * 4 == stored and stored > 10 * 2**20
    assert polls >= 5, polls  # the upload took long enough to be watched
    assert worst < STALL, f"/healthz took {worst * 1000:.0f} ms during the upload"
    assert peak - before <= 3 * stored, (
        f"peak RSS grew {(peak - before) / 2**20:.1f} MB for {stored / 2**20:.1f} MB stored")

    # a large JSON body: parsed in the child process, the loop answers on
    data = _json_body()
    r, worst, polls = _watch(server.url, lambda up: up.post(
        "/v1/datasets", content=data, headers={"content-type": "application/json"}))
    assert r.status_code == 201, r.text
    assert r.json()["rows"] == len(orjson.loads(data)["x"])
    assert polls >= 3, polls
    assert worst < STALL, f"/healthz took {worst * 1000:.0f} ms during the JSON upload"

    # a JSON body over its limit, sent whole as a plain client does before it reads: the 413
    # comes on the headers, and the server reads and drops the rest before it closes (a close
    # with the body unread makes the kernel answer with a reset, which overtook the 413)
    declared = JSON_LIMIT + (4 << 20)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(f"POST /v1/datasets HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                  f"application/json\r\nContent-Length: {declared}\r\n\r\n".encode())
        s.sendall(b"[" + b"0," * (declared // 2 - 1) + b"0")  # would be a reset: no linger
        answer = b""
        while chunk := s.recv(65536):  # the server closes the connection after its answer
            answer += chunk
        answer = answer.decode(errors="replace")
    assert answer.startswith("HTTP/1.1 413"), answer[:300]
    assert "FITSERVE_MAX_JSON_BODY_BYTES" in answer and "Parquet" in answer
