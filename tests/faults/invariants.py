"""The invariants every fault test checks after its fault, in one function.

After any fault has cleared (space is back, the server restarted, the client gone):
- every job a client got a 202 for ends in a terminal state, with its loss history;
- no job exists that no client was told about, unless an Idempotency-Key retry finds it;
- no job ran to completion twice (one model per succeeded job, none for the others);
- no job stays running or queued while the server's workers are alive;
- no file under the data directory that no record points to, and no temporary file;
- no Idempotency-Key stays reserved (its request never finished) past the bounded time;
- the server answered no 500 (its access log), and ``/readyz`` says ready: the workers came
  back by themselves.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.conftest import ServerProcess
from tests.helpers import probe, wait_for

TERMINAL = {"succeeded", "failed", "cancelled"}


def _rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def stray_files(data_dir: Path) -> list[str]:
    """Files under the data directory that no record points to, and temporary files."""
    db = data_dir / "fitserve.db"
    shas = {r[0] for r in _rows(db, "SELECT sha256 FROM datasets")}
    models = {r[0] for r in _rows(db, "SELECT id FROM models")}
    jobs = {r[0] for r in _rows(db, "SELECT id FROM jobs")}
    known = {"datasets": shas, "checkpoints": models, "traces": jobs}
    stray = []
    for sub, ids in known.items():
        folder = data_dir / sub
        if not folder.is_dir():
            continue
        for f in folder.iterdir():
            stem = f.name.split(".", 1)[0]
            if f.name.startswith(".") or stem not in ids:
                stray.append(f"{sub}/{f.name}")
    return sorted(stray)


def served_500s(server: ServerProcess) -> list[str]:
    """Access-log lines of the server that answered 500 (one JSON object a line)."""
    out = []
    for line in server.log.read_text(errors="replace").splitlines():
        if '"status"' not in line or not line.startswith("{"):
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("status") == 500:
            out.append(line[:300])
    return out


def check_invariants(
    server: ServerProcess,
    accepted: Iterable[str] = (),
    *,
    told: Iterable[str] | None = None,
    timeout: float = 90.0,
    headers: dict[str, str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Assert the invariants on a running ``server``; returns the jobs by id.

    ``accepted``: the ids of jobs whose submit answered 202. ``told``: when given, every job
    in the store must be one of these (the accepted ones, plus those an Idempotency-Key retry
    found): a crash may commit a job whose client never heard of it, but a retry must find it.
    """
    accepted = set(accepted)
    db = server.data_dir / "fitserve.db"
    with httpx.Client(base_url=server.url, timeout=30, headers=headers or {}) as http:
        wait_for(lambda: http.get("/readyz").status_code == 200, timeout=timeout)

        def all_ended() -> bool:
            open_jobs = _rows(db, "SELECT id, status FROM jobs "
                                  "WHERE status IN ('queued', 'running')")
            return not open_jobs

        wait_for(all_ended, timeout=timeout, every=0.2)
        jobs: dict[str, dict[str, Any]] = {}
        for job_id in accepted:
            r = http.get(f"/v1/jobs/{job_id}")
            assert r.status_code == 200, f"accepted job {job_id} is gone: {r.text}"
            job = r.json()
            assert job["status"] in TERMINAL, job
            history = http.get(f"/v1/jobs/{job_id}/history")
            assert history.status_code == 200, history.text
            jobs[job_id] = job

    all_jobs = {r[0]: r for r in _rows(db, "SELECT id, status, model_id FROM jobs")}
    if told is not None:
        unknown = set(all_jobs) - set(told) - accepted
        assert not unknown, f"jobs no client was told about: {sorted(unknown)}"
    models = _rows(db, "SELECT job_id, id FROM models")
    per_job: dict[str, list[str]] = {}
    for job_id, model_id in models:
        per_job.setdefault(job_id, []).append(model_id)
    twice = {j: m for j, m in per_job.items() if len(m) > 1}
    assert not twice, f"jobs that completed more than once: {twice}"
    for job_id, status, model_id in all_jobs.values():
        if status == "succeeded":
            assert per_job.get(job_id) == [model_id], (job_id, per_job.get(job_id))
        else:
            assert job_id not in per_job, f"{status} job {job_id} has a model"

    reservation = float(server.env.get("FITSERVE_IDEMPOTENCY_RESERVATION_S", "60"))

    def no_old_reservations() -> bool:
        return not _rows(db, "SELECT key FROM idempotency_keys WHERE resource_id IS NULL AND "
                             f"created_at < datetime('now', '-{reservation + 2:.0f} seconds')")

    assert no_old_reservations(), "an Idempotency-Key stays reserved past its bound"
    # a crash's leftovers go at the next start or sweep (FITSERVE_ORPHAN_GRACE_S)
    wait_for(lambda: not stray_files(server.data_dir), timeout=timeout, every=0.5)
    assert not served_500s(server), served_500s(server)
    return jobs


def wait_readiness(server: ServerProcess, ready: bool, timeout: float = 30.0) -> dict:
    """Poll ``/readyz`` until it says ``ready``; returns its body."""

    def check() -> dict | None:
        r = probe().get(f"{server.url}/readyz", timeout=5)
        return r.json() if (r.status_code == 200) == ready else None

    return wait_for(check, timeout=timeout, every=0.2)


def sleep_past(seconds: float) -> None:
    time.sleep(seconds)
