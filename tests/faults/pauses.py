"""Driving the workers' fault points (service/faults.py) from a test: wait until a
job stands at a point, then kill or signal whatever the case needs, then let it go on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from service.faults import POINTS
from tests.helpers import finished_job, seed_example, wait_for

ALL_POINTS = ",".join(POINTS)
FAST_SWEEP = {"FITSERVE_SWEEP_INTERVAL_S": "1", "FITSERVE_ORPHAN_GRACE_S": "1"}
"""A crash's leftovers go within seconds (the defaults: 600 s old, every 300 s)."""
JOB = {"epochs": 300, "batch_size": 5, "seed": 0}
"""A seed job that trains epoch by epoch (so it has a first progress write), in a tenth of a
second: mini-batches, so the fused loop (the closed form would have no epochs to report;
the autograd loop's first torch.optim step imports torch._dynamo, 1.3 s in each worker)."""


def submit(server: Any) -> str:
    """Submit ``JOB`` on the seed data; its id."""
    d = seed_example()
    with httpx.Client(base_url=server.url, timeout=30) as http:
        r = http.post("/v1/jobs", json={"x": d["x"], "y": d["y"], **JOB})
        assert r.status_code == 202, r.text
        return r.json()["id"]


def ended(server: Any, job_id: str) -> dict[str, Any]:
    """The job once it has ended; a succeeded one has its whole loss history, one value an
    epoch, whatever runs before it were cut off."""
    with httpx.Client(base_url=server.url, timeout=30) as http:
        job = finished_job(http, job_id, timeout=90)
        if job["status"] == "succeeded":
            history = http.get(f"/v1/jobs/{job_id}/history").json()
            assert len(history["loss"]) == JOB["epochs"], history
        return job


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

    def go(self, job_id: str) -> None:
        """From now on the job passes every point (its runs after a crash too)."""
        (self.folder / f"{job_id}.go").write_text("")
