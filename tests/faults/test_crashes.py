"""kill -9 and SIGTERM of a worker at each step of a job's life: claimed, training,
checkpoint written (record not yet committed), model committed (nobody told yet). Every job
ends once, with its history; an attempt is counted for a crash and refunded for a stop on
purpose; no file is left that no record points to. (The API, or the API and its workers at
once: test_server_crashes.py.)"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import ServerProcess, module_server
from tests.faults.invariants import check_invariants
from tests.faults.pauses import FAST_SWEEP, Pauses, ended, pause_env, submit

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Pauses]]:
    """One server for the cases that kill only a worker (the server replaces it)."""
    pauses = Pauses(tmp_path_factory.mktemp("pauses"))
    for server in module_server(tmp_path_factory, "crashes", 1, **pause_env(pauses.folder),
                                **FAST_SWEEP):
        yield server, pauses


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
    job_id = submit(server)
    worker = pauses.walk_to(job_id, point)
    os.kill(worker, sig)
    pauses.go(job_id)
    job = ended(server, job_id)
    assert job["status"] == "succeeded", job
    assert job["attempts"] == attempts, job
    check_invariants(server, [job_id])
