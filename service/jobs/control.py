"""A submitted job's controls and results beyond its row: cancel, the step trace."""

from __future__ import annotations

from typing import TYPE_CHECKING

from service.errors import Conflict, NotFound, job_already_finished
from service.jobs.status import FINISHED
from service.store.tables import JobRow

if TYPE_CHECKING:
    from service.services import Services


def cancel_job(services: Services, job_id: str, tenant: str, task: str = "train") -> JobRow:
    """Cancel a queued job at once; a running one stops at its next progress check. A job
    that has ended is a 409 that says how it ended. ``task``: a training job's or a batch
    prediction's."""
    try:
        row = services.meta.request_cancel(job_id, tenant, task)
    except Conflict:
        job = services.meta.get_job(job_id, tenant, task)
        if job.status not in FINISHED:
            raise
        raise job_already_finished(job.id, job.status) from None
    if row.status in FINISHED:
        services.waiters.finished(job_id)
    return row


def read_trace(services: Services, job_id: str, tenant: str) -> bytes:
    """The stored trace (JSON): 404 for a job without one, 409 while it is not stored yet."""
    job = services.meta.get_job(job_id, tenant)
    if not (job.spec or {}).get("trace_epochs"):
        raise NotFound(f"job {job_id!r} was submitted without trace_epochs; it has no trace")
    blob = services.artifacts.read_trace(job.id)
    if blob is None:
        if job.status in FINISHED:
            raise NotFound(f"job {job_id!r} ended ({job.status}) before its first traced step")
        raise Conflict(f"job {job_id!r} is {job.status}; its trace is stored when it ends")
    return blob
