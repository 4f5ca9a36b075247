"""Long polls that wake when a worker reports a job's end, instead of polling the store.

In the embedded mode the workers' events reach the API process (LocalWorkerPool's event
pump, a thread); ``finished`` hands them to the waiting requests' event loops. Where no
events arrive (the Celery queue), ``pushed`` is False and callers poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from functools import partial

from anyio import to_thread

from service.jobs.status import FINISHED
from service.store.metadata import MetadataStore
from service.store.tables import JobRow


class JobWaiters:
    def __init__(self) -> None:
        self.pushed = False  # set when a queue backend reports job ends here
        self.closing = False  # the server is stopping: waits end at once
        self._lock = threading.Lock()
        self._waiting: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}

    def subscribe(self, job_id: str) -> tuple[asyncio.AbstractEventLoop, asyncio.Event]:
        """Register before reading the job, so an end between the read and the wait is seen."""
        entry = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._waiting.setdefault(job_id, set()).add(entry)
        return entry

    def unsubscribe(self, job_id: str, entry: tuple[asyncio.AbstractEventLoop, asyncio.Event]
                    ) -> None:
        with self._lock:
            entries = self._waiting.get(job_id)
            if entries is not None:
                entries.discard(entry)
                if not entries:
                    del self._waiting[job_id]

    def shutdown(self) -> None:
        """The server is stopping: every long poll answers with what it has, now."""
        self.closing = True
        with self._lock:
            entries = [e for group in self._waiting.values() for e in group]
        for loop, event in entries:
            loop.call_soon_threadsafe(event.set)

    def finished(self, job_id: str) -> None:
        """Called from any thread when a job has ended."""
        with self._lock:
            entries = list(self._waiting.get(job_id, ()))
        for loop, event in entries:
            loop.call_soon_threadsafe(event.set)


async def wait_for_end(
    waiters: JobWaiters, meta: MetadataStore, job_id: str, tenant: str, wait: float,
    task: str = "train",
) -> JobRow:
    """The job row, once it has ended or ``wait`` seconds have passed (the long poll of
    ``GET /v1/jobs/{id}?wait=``). Where workers report job ends (the embedded pool) the caller
    sleeps until told, reading the store only as a backstop; elsewhere it polls, often at
    first so that short jobs are seen at once."""
    deadline = time.monotonic() + wait
    delay = 0.002
    while True:
        entry = waiters.subscribe(job_id) if wait else None
        try:
            row = await to_thread.run_sync(partial(meta.get_job, task=task), job_id, tenant)
            left = deadline - time.monotonic()
            if row.status in FINISHED or left <= 0 or entry is None or waiters.closing:
                return row
            if waiters.pushed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(entry[1].wait(), min(left, 0.5))
            else:
                await asyncio.sleep(min(delay, left))
                if wait - left > 0.2:
                    delay = min(delay * 2, 0.05)
        finally:
            if entry is not None:
                waiters.unsubscribe(job_id, entry)
