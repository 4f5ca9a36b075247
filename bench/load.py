"""A fixed-connection load generator: wrk when installed (Debian's package), else httpx."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

import httpx
import orjson

LOAD_CPUS: str | None = None
"""``taskset -c`` list wrk runs on (bench.mlserver's ``--pin``); None: anywhere."""


@dataclass(frozen=True)
class Payload:
    """A POST body as sent: JSON or the v2 protocol's JSON head followed by raw tensor bytes."""

    content: bytes
    headers: dict[str, str] = field(default_factory=lambda: {"content-type": "application/json"})

    @classmethod
    def json(cls, body: object) -> Payload:
        return cls(orjson.dumps(body))


def run(url: str, body: dict | Payload, seconds: float,
        connections: int = 16) -> dict[str, float]:
    """Requests/s and p50/p99 latency (ms) of POSTing ``body`` to ``url`` (wrk runs whole
    seconds: a shorter run, the quick bench's, uses httpx)."""
    payload = body if isinstance(body, Payload) else Payload.json(body)
    if shutil.which("wrk") and seconds >= 1:
        return _wrk(url, payload, seconds, connections)
    return asyncio.run(_httpx(url, payload, seconds, connections))


def _wrk(url: str, payload: Payload, seconds: float, connections: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        body_path = os.path.join(tmp, "body")
        with open(body_path, "wb") as f:  # read by the script: binary bodies stay intact
            f.write(payload.content)
        headers = "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in payload.headers.items())
        script = os.path.join(tmp, "post.lua")
        with open(script, "w") as f:
            f.write(f'wrk.method = "POST"\n{headers}'
                    f'local f = io.open("{body_path}", "rb")\n'
                    'wrk.body = f:read("*a")\nf:close()\n')
        pin = [] if LOAD_CPUS is None else ["taskset", "-c", LOAD_CPUS]
        out = subprocess.run(
            [*pin, "wrk", "-t2", f"-c{connections}", f"-d{max(1, int(seconds))}s", "--latency",
             "-s", script, url],
            capture_output=True, text=True, check=True,
        ).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"errors under load:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return {"rps": rps, "p50": _pct(out, "50%"), "p99": _pct(out, "99%")}


def _pct(out: str, name: str) -> float:
    m = re.search(rf"{re.escape(name)}\s+([\d.]+)(us|ms|s)", out)
    assert m, out
    return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]


async def _httpx(url: str, payload: Payload, seconds: float,
                 connections: int) -> dict[str, float]:
    lat: list[float] = []
    end = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=connections)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:

        async def worker() -> None:
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                r = await client.post(url, content=payload.content, headers=payload.headers)
                if r.status_code != 200:
                    raise RuntimeError(r.text)
                lat.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - t0
    lat.sort()
    return {"rps": len(lat) / elapsed, "p50": lat[len(lat) // 2] * 1e3,
            "p99": lat[int(len(lat) * 0.99)] * 1e3}
