"""kill -9 and SIGTERM of a worker, of the API, and of both, at each step of a job's life:
claimed, training, checkpoint written (record not yet committed), model committed (nobody
told yet). Every job ends once, with its history; an attempt is counted for a crash and
refunded for a stop on purpose; no file is left that no record points to."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import ServerProcess
from tests.faults.invariants import check_invariants
from tests.faults.pauses import Pauses, pause_env
from tests.helpers import finished_job, seed_example

pytestmark = pytest.mark.e2e

FAST_SWEEP = {"FITSERVE_SWEEP_INTERVAL_S": "1", "FITSERVE_ORPHAN_GRACE_S": "1"}
JOB = {"epochs": 300, "engine": "autograd", "seed": 0}


def _submit(server: ServerProcess) -> str:
    d = seed_example()
    with httpx.Client(base_url=server.url, timeout=30) as http:
        r = http.post("/v1/jobs", json={"x": d["x"], "y": d["y"], **JOB})
        assert r.status_code == 202, r.text
        return r.json()["id"]


def _ended(server: ServerProcess, job_id: str) -> dict:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        return finished_job(http, job_id, timeout=90)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Pauses]]:
    """One server for the cases that kill only a worker (the server replaces it)."""
    root = tmp_path_factory.mktemp("crashes")
    pauses = Pauses(root / "pauses")
    server = ServerProcess(root / "data", 1, **pause_env(pauses.folder), **FAST_SWEEP).start()
    yield server, pauses
    server.stop()


@pytest.mark.parametrize(("point", "sig", "attempts"), [
    ("claimed", signal.SIGKILL, 2),
    ("training", signal.SIGKILL, 2),
    ("checkpoint", signal.SIGKILL, 2),
    ("commit", signal.SIGKILL, 1),  # it had already succeeded: nothing runs again
    ("training", signal.SIGTERM, 1),  # stopped on purpose: the attempt is refunded
    ("checkpoint", signal.SIGTERM, 1),
])
def test_a_worker_killed_at_each_step(shared, point, sig, attempts):
    server, pauses = shared
    job_id = _submit(server)
    worker = pauses.walk_to(job_id, point)
    os.kill(worker, sig)
    with pauses.released(job_id):
        job = _ended(server, job_id)
    assert job["status"] == "succeeded", job
    assert job["attempts"] == attempts, job
    check_invariants(server, [job_id])


@pytest.mark.parametrize(("point", "how", "attempts"), [
    ("training", "api-kill", 2),  # the workers die with the API (PR_SET_PDEATHSIG)
    ("checkpoint", "group-kill", 2),  # the API and its workers at once
    ("training", "api-term", 1),  # a graceful stop: the job goes back, refunded
])
def test_the_server_killed_or_stopped_at_a_step(server_factory, tmp_path: Path, point, how,
                                                attempts):
    pauses = Pauses(tmp_path / "pauses")
    env = {**pause_env(pauses.folder), **FAST_SWEEP}
    first = server_factory(workers=1, **env)
    first.new_session = how == "group-kill"
    first.start()
    job_id = _submit(first)
    pauses.walk_to(job_id, point)
    assert first.proc is not None
    if how == "api-kill":
        first.kill()
    elif how == "group-kill":
        os.killpg(first.proc.pid, signal.SIGKILL)
        first.proc.wait(10)
        first.proc = None
    else:
        first.stop()
    with pauses.released(job_id):
        again = server_factory(workers=1, data_dir=first.data_dir, **env).start()
        job = _ended(again, job_id)
    assert job["status"] == "succeeded", job
    assert job["attempts"] == attempts, job
    check_invariants(again, [job_id])
