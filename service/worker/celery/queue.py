"""The scale-out queue as an API process sees it: publish a committed job to its device's
Celery queue, tell why a queued job waits, and watch the model catalog counter."""

from __future__ import annotations

import logging
import time

from service.config import Settings
from service.store.metadata import MetadataStore
from service.store.tables import JobRow
from service.training.devices import parse_device_name
from service.worker.celery.app import make_celery, publish, queue_size
from service.worker.celery.broker import CatalogCounter, WorkerRegistry, device_kind, redis_client
from service.worker.reaper import Reaper

log = logging.getLogger(__name__)

_AUTO_ORDER = ("cuda", "mps", "cpu")


class CeleryQueue:
    LIVE_CACHE_S = 1.0

    def __init__(self, settings: Settings, meta: MetadataStore) -> None:
        self.settings = settings
        self.meta = meta
        self.app = make_celery(settings)
        self.redis = redis_client(settings.broker_url)
        self.registry = WorkerRegistry(self.redis, settings.broker_prefix,
                                       settings.heartbeat_timeout_s)
        self.catalog_version = CatalogCounter(self.redis, settings.broker_prefix)
        self.reaper = Reaper(
            meta,
            self.publish,
            lambda kind: queue_size(self.app, kind),
            interval_s=settings.reaper_interval_s,
            heartbeat_timeout_s=settings.heartbeat_timeout_s,
            max_attempts=settings.max_job_attempts,
        )
        self._live: dict[str, tuple[float, int]] = {}

    # ------------------------------------------------------------ JobQueue

    def notify(self, job_id: str | None = None, device: str | None = None) -> None:
        """A job was committed as queued: publish it. A broker that is away costs the client
        nothing: the job stays queued and the reaper publishes it once the broker is back."""
        if job_id is None:
            return
        if device is None:
            device = self.meta.get_job(job_id, tenant=None, task=None).device
        try:
            self.publish(job_id, device)
        except Exception as e:  # noqa: BLE001 - recovered by the reaper
            log.error("job %s committed but not published (%s); the reaper will retry",
                      job_id, e)

    def publish(self, job_id: str, device: str) -> None:
        publish(self.app, job_id, device)

    def start(self) -> None:
        self.catalog_version.start()
        self.reaper.start()

    def stop(self) -> None:
        self.reaper.stop()
        self.catalog_version.stop()
        self.redis.close()

    # ------------------------------------------------------------ what the API asks

    def live_workers(self, kind: str) -> int:
        """Workers consuming ``kind``'s queue now (cached for about a second)."""
        now = time.monotonic()
        hit = self._live.get(kind)
        if hit is not None and now - hit[0] < self.LIVE_CACHE_S:
            return hit[1]
        try:
            count = len(self.registry.live(kind))
        except Exception as e:  # noqa: BLE001 - said in the waiting reason
            log.warning("worker registry unreachable: %s", e)
            count = -1
        self._live[kind] = (now, count)
        return count

    def waiting_reason(self, job: JobRow) -> str | None:
        if job.status != "queued":
            return None
        kind = device_kind(job.device)
        live = self.live_workers(kind)
        if live == 0:
            return (f"no worker serves the {kind} queue; start one with "
                    f"`fitserve worker --device {kind}`")
        if live < 0:
            return "the broker cannot be reached; the job is kept and sent once it is back"
        return None

    def resolve_device(self, requested: str | None, default: str) -> str:
        """Any well-formed device name: the workers, not this API machine, have the devices.
        ``auto`` takes the best kind that a live worker serves (cpu when none does)."""
        name = parse_device_name(requested or default, allow_auto=True)
        if name != "auto":
            return name
        for kind in _AUTO_ORDER:
            if self.live_workers(kind) > 0:
                return kind
        return "cpu"

    def readiness(self) -> dict[str, str]:
        try:
            self.redis.ping()
            return {"broker": "ok"}
        except Exception as e:  # noqa: BLE001 - reported, not raised
            return {"broker": f"error: {type(e).__name__}"}
