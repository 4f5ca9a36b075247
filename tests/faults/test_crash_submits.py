"""kill -9 of the API during 50 concurrent submits, each with its own Idempotency-Key, then a
restart on the same data directory and a retry of every submit with its key.

A job and its key's record commit in one transaction, so a job the crash committed is found
by its retry; a key whose request died is free again after its bound (or at the start of the
server), so no retry gets a permanent 409 "still being processed"."""

from __future__ import annotations

import sqlite3
import threading
import time
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import ServerProcess, server_factory
from tests.faults.invariants import check_invariants
from tests.helpers import wait_for

__all__ = ["server_factory"]

pytestmark = pytest.mark.e2e

SUBMITS = 50
RESERVATION_S = 5
KILL_AT = 8  # jobs committed  # the bound on a dead request's hold on its key, short for the test


def _body(i: int) -> dict[str, Any]:
    """Inline data of this submit's own (a dataset file each), a few epochs."""
    x = [[float(i), float(r)] for r in range(6)]
    return {"x": x, "y": [[row[0] + 2 * row[1]] for row in x], "epochs": 3}


def _first_wave(server: ServerProcess) -> dict[int, httpx.Response | BaseException]:
    """All submits at once; the server is killed (-9) as the first answer comes back."""
    gate = threading.Barrier(SUBMITS)
    answered = threading.Event()
    out: dict[int, httpx.Response | BaseException] = {}

    def submit(i: int) -> None:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            gate.wait()
            try:
                out[i] = http.post("/v1/jobs", json=_body(i),
                                   headers={"Idempotency-Key": f"crash-{i}"})
                answered.set()
            except httpx.HTTPError as e:  # cut off by the kill
                out[i] = e

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(SUBMITS)]
    for t in threads:
        t.start()
    # killed once a few jobs are committed (and most requests are still in flight)
    wait_for(lambda: _committed(server) >= KILL_AT, timeout=120,
             every=0.01)
    server.kill()
    for t in threads:
        t.join(60)
    return out


def _committed(server: ServerProcess) -> int:
    conn = sqlite3.connect(f"file:{server.data_dir / 'fitserve.db'}?mode=ro", uri=True,
                           timeout=30)
    try:
        return int(conn.execute("SELECT count(*) FROM jobs").fetchone()[0])
    finally:
        conn.close()


def _retry(http: httpx.Client, i: int, deadline: float) -> httpx.Response:
    """The submit again, with its key: a 202 (its job, new or the one the crash committed).
    A 409 "still being processed" may come back while the dead request's hold lasts (at
    most its bound), never after."""
    while True:
        r = http.post("/v1/jobs", json=_body(i), headers={"Idempotency-Key": f"crash-{i}"})
        if r.status_code != 409 or time.monotonic() > deadline:
            return r
        assert r.json()["error"]["field"] == "Idempotency-Key", r.text
        time.sleep(0.25)  # the hold is time-bound: nothing to wait on but the clock


def test_kill_during_concurrent_submits_then_retry_with_the_keys(server_factory):
    server: ServerProcess = server_factory(
        workers=1, FITSERVE_IDEMPOTENCY_RESERVATION_S=str(RESERVATION_S),
        FITSERVE_ORPHAN_GRACE_S="1", FITSERVE_SWEEP_INTERVAL_S="1").start()
    first = _first_wave(server)
    told = {i: r.json()["id"] for i, r in first.items()
            if isinstance(r, httpx.Response) and r.status_code == 202}
    cut_off = [i for i, r in first.items() if not isinstance(r, httpx.Response)]
    assert cut_off, "the kill came after every submit was answered: nothing was tested"
    for r in first.values():  # a refusal under load is fine (the retry does it), a 500 not
        assert not isinstance(r, httpx.Response) or r.status_code in (202, 409), r.text

    server.start()  # the same data directory
    accepted: dict[int, str] = {}
    # a dead request's hold ends RESERVATION_S after it began: well before this deadline
    deadline = time.monotonic() + 3 * RESERVATION_S + 15
    with httpx.Client(base_url=server.url, timeout=60) as http:
        for i in range(SUBMITS):
            r = _retry(http, i, deadline)
            assert r.status_code == 202, f"retry of submit {i}: {r.status_code} {r.text}"
            accepted[i] = r.json()["id"]
        assert all(accepted[i] == job_id for i, job_id in told.items()), \
            "a retry of an answered submit got another job"
        again = http.post("/v1/jobs", json=_body(0), headers={"Idempotency-Key": "crash-0"})
        assert again.status_code == 202 and again.json()["id"] == accepted[0]
    assert len(set(accepted.values())) == SUBMITS  # one job a key
    # every job in the store is one a client was told about (the 202s of the retries)
    check_invariants(server, accepted.values(), told=accepted.values())
