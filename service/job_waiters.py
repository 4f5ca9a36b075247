"""Long polls that wake when a worker reports a job's end, instead of polling the store.

In the embedded mode the workers' events reach the API process (LocalWorkerPool's event
pump, a thread); ``finished`` hands them to the waiting requests' event loops. Where no
events arrive (the Celery queue), ``pushed`` is False and callers poll.
"""

from __future__ import annotations

import asyncio
import threading


class JobWaiters:
    def __init__(self) -> None:
        self.pushed = False  # set when a queue backend reports job ends here
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

    def finished(self, job_id: str) -> None:
        """Called from any thread when a job has ended."""
        with self._lock:
            entries = list(self._waiting.get(job_id, ()))
        for loop, event in entries:
            loop.call_soon_threadsafe(event.set)
