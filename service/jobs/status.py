"""The job-status vocabulary, in one place. A leaf module (standard library only): the store,
the routes, telemetry and the Python client all import it."""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE: tuple[str, ...] = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)
"""A worker holds or will hold the job."""
FINISHED: tuple[str, ...] = (
    JobStatus.SUCCEEDED.value, JobStatus.FAILED.value, JobStatus.CANCELLED.value)
"""The job has ended; its status never changes again."""
ALL: tuple[str, ...] = tuple(s.value for s in JobStatus)
