"""Driving the workers' fault points (service/worker/faults.py) from a test: wait until a
job stands at a point, then kill or signal whatever the case needs, then let it go on."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from service.worker.faults import POINTS
from tests.helpers import wait_for

ALL_POINTS = ",".join(POINTS)


def pause_env(folder: Path) -> dict[str, str]:
    """The server environment that makes every job stop at every point."""
    return {"FITSERVE_FAULT_PAUSE": ALL_POINTS, "FITSERVE_FAULT_DIR": str(folder)}


class Pauses:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def marker(self, job_id: str, point: str) -> Path:
        return self.folder / f"{job_id}.{point}"

    def wait(self, job_id: str, point: str, timeout: float = 90) -> int:
        """Until the job stands at ``point``; returns the pid of the worker holding it."""
        marker = self.marker(job_id, point)
        wait_for(lambda: marker.exists() and marker.read_text().strip(), timeout=timeout)
        return int(marker.read_text())

    def release(self, job_id: str, point: str) -> None:
        self.marker(job_id, point).unlink(missing_ok=True)

    def walk_to(self, job_id: str, point: str) -> int:
        """Let the job through every point before ``point``; stop it there."""
        for p in POINTS:
            pid = self.wait(job_id, p)
            if p == point:
                return pid
            self.release(job_id, p)
        raise ValueError(point)

    @contextmanager
    def released(self, job_id: str) -> Iterator[None]:
        """From now on the job passes every point (its runs after a crash too)."""
        done = threading.Event()

        def loop() -> None:
            while not done.wait(0.02):
                for p in POINTS:
                    self.release(job_id, p)

        t = threading.Thread(target=loop, daemon=True)
        t.start()
        try:
            yield
        finally:
            done.set()
            t.join(5)
