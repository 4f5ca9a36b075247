"""Memory after large requests, against a real server (issue 17, item 8): large 404 predicts
and slow uploads leave the API process within 1.5x of its memory at rest."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.faults.invariants import check_invariants
from tests.helpers import wait_for

pytestmark = pytest.mark.e2e

MODEL_CHARS = 3 * 1024 * 1024  # a "model" reference of 3 MB: not found, and not echoed
UPLOAD_BYTES = 4_700_000


def rss(pid: int) -> int:
    """The resident set of process ``pid``, in bytes (Linux's /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def _csv_rows() -> bytes:
    rng = np.random.default_rng(0)
    out = io.BytesIO()
    rows = UPLOAD_BYTES // 24
    np.savetxt(out, rng.standard_normal((rows, 2)), fmt="%.8f", delimiter=",")
    return out.getvalue()


def _slow_body(first: bytes, rest: bytes, seconds: float = 1.0, parts: int = 20
               ) -> Iterator[bytes]:
    """The body in ``parts`` chunks over about ``seconds`` (a slow client's upload)."""
    yield first
    step = len(rest) // parts + 1
    for i in range(0, len(rest), step):
        time.sleep(seconds / parts)
        yield rest[i : i + step]


def test_large_404s_and_slow_uploads_leave_memory_near_rest(server_factory):
    server = server_factory(workers=0).start()
    assert server.proc is not None
    pid = server.proc.pid
    rows = _csv_rows()
    big_ref = "m" * MODEL_CHARS

    with httpx.Client(base_url=server.url, timeout=60) as http:
        def predict_404() -> None:
            r = http.post("/predict", json={"model": big_ref, "x": [[1.0]]})
            assert r.status_code == 404, r.text[:300]
            assert len(r.content) < 2000  # the reference is not echoed

        def upload(i: int) -> None:
            with httpx.Client(base_url=server.url, timeout=60) as own:
                r = own.post("/v1/datasets?target=y",
                             content=_slow_body(f"x,y\n{i},{i}\n".encode(), rows),
                             headers={"content-type": "text/csv"})
            assert r.status_code in (200, 201), r.text[:300]

        predict_404()  # warm: each path's first use loads what it keeps
        upload(-1)
        rest = wait_for(lambda: rss(pid), timeout=5)

        for _ in range(100):
            predict_404()
        with ThreadPoolExecutor(max_workers=25) as pool:
            list(pool.map(upload, range(50)))

        after = {"rss": rss(pid)}

        def returned() -> bool:
            after["rss"] = rss(pid)
            return after["rss"] <= 1.5 * rest

        try:
            wait_for(returned, timeout=15, every=0.25)
        except AssertionError:
            raise AssertionError(f"RSS {after['rss'] / 2**20:.0f} MiB after the load, "
                                 f"{rest / 2**20:.0f} MiB at rest") from None
    check_invariants(server, [])
