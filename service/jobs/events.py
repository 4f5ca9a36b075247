"""A job's progress as a stream of events, read from the job row the worker writes.

Progress events carry the epoch as their id, so a client that reconnects with the last id it
saw gets only what is new. The last event is ``end``, with the finished job; its id is
``END_ID``, and a client that comes back after it has nothing more to get.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import anyio
import anyio.to_thread

from service.errors import InvalidInput
from service.jobs.status import FINISHED
from service.store.metadata import MetadataStore
from service.store.tables import JobRow

END_ID = "end"
SHUTDOWN = "shutdown"
POLL_S = 0.1
"""How often the job row is read: progress goes out at most this often."""


@dataclass(frozen=True)
class JobEvent:
    event: str
    id: str
    data: dict[str, Any]


def parse_last_event_id(value: str | None) -> int | str | None:
    """``Last-Event-ID`` as sent back by a client: an epoch, ``END_ID``, or nothing."""
    if value is None or value.strip() == "":
        return None
    value = value.strip()
    if value == END_ID:
        return END_ID
    try:
        epoch = int(value)
    except ValueError:
        epoch = -1
    if epoch < 0:
        raise InvalidInput(
            f"Last-Event-ID must be an epoch number or {END_ID!r} (got {value!r})",
            field="Last-Event-ID",
        )
    return epoch


def _progress(row: JobRow) -> JobEvent:
    return JobEvent("progress", str(row.progress_epoch), {
        "epoch": row.progress_epoch,
        "epochs": row.epochs,
        "loss": row.progress_loss,
        "val_loss": row.progress_val_loss,
    })


async def job_events(
    meta: MetadataStore,
    job_id: str,
    tenant: str,
    after_epoch: int,
    public: Callable[[JobRow], dict[str, Any]],
    poll_s: float = POLL_S,
    stopping: Callable[[], bool] = lambda: False,
    task: str = "train",
    progress: Callable[[JobRow], dict[str, Any]] | None = None,
) -> AsyncIterator[JobEvent]:
    """Progress newer than ``after_epoch`` until the job ends, then ``end`` with
    ``public(row)``. The row is read in a thread: the event loop never waits on the store.
    When the server stops first, the last event is ``shutdown`` (the job as it stands; its
    id is the last epoch sent, so a reconnect to the next server resumes there).
    ``task``: the kind of job; a batch prediction's progress counts rows, and its events
    carry ``progress(row)``."""
    last = after_epoch
    attempts: int | None = None
    while True:
        row = await anyio.to_thread.run_sync(partial(meta.get_job, task=task), job_id,
                                             tenant)
        if attempts is not None and row.attempts != attempts:
            last = 0  # run again after its worker died: it starts over, and so do we
        attempts = row.attempts
        if row.progress_epoch > last:
            last = row.progress_epoch
            yield _progress(row) if progress is None else JobEvent(
                "progress", str(row.progress_epoch), progress(row))
        if row.status in FINISHED:
            yield JobEvent("end", END_ID, public(row))
            return
        if stopping():
            yield JobEvent(SHUTDOWN, str(last), {
                "message": "the server is stopping; reconnect with Last-Event-ID to resume",
                "job": public(row)})
            return
        await anyio.sleep(poll_s)
