"""A fixed-connection load generator: wrk when installed (Debian's package), else httpx."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import tempfile
import time

import httpx
import orjson


def run(url: str, body: dict, seconds: float, connections: int = 16) -> dict[str, float]:
    """Requests/s and p50/p99 latency (ms) of POSTing ``body`` to ``url``."""
    if shutil.which("wrk"):
        return _wrk(url, body, seconds, connections)
    return asyncio.run(_httpx(url, body, seconds, connections))


def _wrk(url: str, body: dict, seconds: float, connections: int) -> dict[str, float]:
    payload = orjson.dumps(body).decode()
    script = (
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = [==[{payload}]==]\n"  # a long string: JSON holds ]]

    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as f:
        f.write(script)
        f.flush()
        out = subprocess.run(
            ["wrk", "-t2", f"-c{connections}", f"-d{max(1, int(seconds))}s", "--latency",
             "-s", f.name, url],
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


async def _httpx(url: str, body: dict, seconds: float, connections: int) -> dict[str, float]:
    payload = orjson.dumps(body)
    lat: list[float] = []
    end = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=connections)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:

        async def worker() -> None:
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                r = await client.post(url, content=payload,
                                      headers={"content-type": "application/json"})
                if r.status_code != 200:
                    raise RuntimeError(r.text)
                lat.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - t0
    lat.sort()
    return {"rps": len(lat) / elapsed, "p50": lat[len(lat) // 2] * 1e3,
            "p99": lat[int(len(lat) * 0.99)] * 1e3}
