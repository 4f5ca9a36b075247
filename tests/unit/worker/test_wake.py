"""The embedded pool wakes an idle worker for each job queued, but keeps no more wakes
waiting than it has workers: a hundred submits once left a hundred, and each idle worker
then spent them one claim query at a time, finding nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.config import Settings
from service.worker.local import LocalWorkerPool


def _waiting(pool: LocalWorkerPool) -> int:
    """The wakes waiting (taken here, as a worker would)."""
    n = 0
    while pool._wake.acquire(block=False):
        n += 1
    return n


@pytest.mark.parametrize("workers", [1, 3])
def test_no_more_wakes_wait_than_there_are_workers(tmp_path: Path, workers: int):
    pool = LocalWorkerPool(Settings(data_dir=tmp_path, workers=workers, device="cpu"),
                           meta=None, artifacts=None)
    try:
        assert _waiting(pool) == 0  # nothing queued yet
        pool.notify()
        assert _waiting(pool) == 1  # one job: one worker woken
        for _ in range(100):
            pool.notify()
        assert _waiting(pool) == workers  # every worker woken, once
        pool.notify()
        assert _waiting(pool) == 1  # and a wake again once they were taken
    finally:  # what stop() lets go of, for a pool that never started
        pool._events.close()
        pool._events.join_thread()
        pool._lock.release()
