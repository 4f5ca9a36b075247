"""Recovery that does not depend on what the broker does with unacknowledged messages.

Every few seconds, in API and worker processes alike:
- a running job whose worker has been silent longer than ``heartbeat_timeout_s`` (the
  machine died, the process was killed, the network split) goes back to the queue within its
  attempts, and is published again to the queue of its device;
- queued jobs that no message stands for (the broker lost them, or the API died between its
  commit and its publish) are published again: when a device's queue is empty but the store
  still has jobs queued for it since before the last pass.

Publishing a job twice is harmless: a delivery claims the job with an atomic update, and a
delivery that finds it running, finished or cancelled is acknowledged and dropped.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import timedelta

from service.store.metadata import MetadataStore
from service.store.tables import utcnow
from service.worker.celery.broker import device_kind

log = logging.getLogger(__name__)

Publish = Callable[[str, str], None]
"""(job id, device) -> the job is on its device's queue."""
QueueSize = Callable[[str], int]
"""device kind -> messages waiting in its queue."""


class Reaper:
    def __init__(
        self,
        meta: MetadataStore,
        publish: Publish,
        queue_size: QueueSize,
        *,
        interval_s: float,
        heartbeat_timeout_s: float,
        max_attempts: int,
    ) -> None:
        self.meta = meta
        self.publish = publish
        self.queue_size = queue_size
        self.interval_s = interval_s
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.max_attempts = max_attempts
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> dict[str, list[str]]:
        """One pass; returns the ids it requeued and those it published again."""
        now = utcnow()
        requeued = self.meta.requeue_stale(
            now - timedelta(seconds=self.heartbeat_timeout_s), self.max_attempts
        )
        for job in requeued:
            self.publish(job.id, job.device)
        # a job younger than one pass may still be on its way to the broker
        waiting = self.meta.queued_jobs(now - timedelta(seconds=2 * self.interval_s))
        sizes: dict[str, int] = {}
        republished = []
        just_sent = {j.id for j in requeued}
        for job in waiting:
            if job.id in just_sent:
                continue
            kind = device_kind(job.device)
            if kind not in sizes:
                sizes[kind] = self.queue_size(kind)
            if sizes[kind] == 0:
                self.publish(job.id, job.device)
                republished.append(job.id)
        if republished:
            log.warning("published again %d queued job(s) that no message stood for: %s",
                        len(republished), republished[:10])
        return {"requeued": [j.id for j in requeued], "republished": republished}

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, daemon=True, name="fitserve-reaper")
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.run_once()
            except Exception:  # the store or the broker is away; try again next pass
                log.exception("reaper pass failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.interval_s + 5)
