"""Advance sweeps in this process, the way the controller thread and the workers would:
a controller step, then every queued job run here, until nothing moves."""

from __future__ import annotations

from typing import Any

from service.jobs.sweeps.controller import SweepController
from service.worker.runner import run_job


def run_jobs(services: Any, limit: int | None = None) -> int:
    """Run queued jobs in this process (at most ``limit``); how many ran."""
    ran = 0
    while limit is None or ran < limit:
        job = services.meta.claim_next("test-worker")
        if job is None:
            break
        run_job(job, "test-worker", services.meta, services.artifacts, notify=services.on_event)
        ran += 1
    return ran


def drive(services: Any, controller: SweepController | None = None, *,
          max_steps: int = 1000) -> SweepController:
    """Step the sweep controller and run the jobs it queues until no job is left and the
    controller holds no active sweep."""
    ctl = controller or services.extra["sweep_controller"]
    for _ in range(max_steps):
        ctl.step()
        if run_jobs(services) == 0 and ctl.step() == 0:
            return ctl
    raise AssertionError(f"the sweeps did not end within {max_steps} steps")
