"""kill -9 and SIGTERM of the API, and of the API and its workers at once, at a step of a
job's life; then a new server on the same data directory. The job ends once, with its history;
an attempt is counted for a crash and refunded for a stop on purpose; no file is left that no
record points to. (A worker alone: test_crashes.py.)"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.faults.invariants import check_invariants
from tests.faults.pauses import FAST_SWEEP, Pauses, ended, pause_env, submit

pytestmark = pytest.mark.e2e

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
    job_id = submit(first)
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
    pauses.go(job_id)
    again = server_factory(workers=1, data_dir=first.data_dir, **env).start()
    job = ended(again, job_id)
    assert job["status"] == "succeeded", job
    assert job["attempts"] == attempts, job
    check_invariants(again, [job_id])
