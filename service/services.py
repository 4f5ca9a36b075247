"""The collaborators one app runs with, built from settings (or handed in by a test)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from service.auth.keys import Authenticator, principal_of
from service.config import Settings
from service.errors import InsufficientStorage, is_disk_full
from service.jobs.waiters import JobWaiters
from service.serving.predictor import Predictor
from service.store.artifacts import ArtifactStore, open_artifacts
from service.store.metadata import MetadataStore
from service.store.tables import JobRow
from service.store.upkeep import disk_state, has_room
from service.training.devices import resolve_device

log = logging.getLogger(__name__)
T = TypeVar("T")


class JobQueue(Protocol):
    """A queue backend: ``LocalWorkerPool`` (embedded) or ``CeleryQueue`` (scale-out)."""

    def notify(self, job_id: str | None = None, device: str | None = None) -> None: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def waiting_reason(self, job: JobRow) -> str | None: ...

    def resolve_device(self, requested: str | None, default: str) -> str: ...


@dataclass
class Services:
    settings: Settings
    meta: MetadataStore
    artifacts: ArtifactStore
    predictor: Predictor
    queue: JobQueue | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    waiters: JobWaiters = field(default_factory=JobWaiters)
    stopping: threading.Event = field(default_factory=threading.Event)
    shutdown_hooks: list[Callable[[], None]] = field(default_factory=list)
    """Called (from the signal handler's thread) when the server starts to stop."""

    @property
    def auth(self) -> Authenticator:
        if "auth" not in self.extra:
            self.extra["auth"] = Authenticator(self.settings, self.meta)
        return self.extra["auth"]

    async def authenticate(self, headers: Mapping[str, str], needed: str) -> str:
        """The caller's tenant, if its key allows ``needed`` (401/403 otherwise); a key not
        in the cache is looked up off the event loop."""
        return (await principal_of(self.auth, headers, needed)).tenant

    def job_submitted(self, job_id: str, device: str | None = None) -> None:
        """A job was committed as queued; ``device`` routes it (looked up when not given)."""
        if self.queue is not None:
            self.queue.notify(job_id, device)

    def waiting_reason(self, job: JobRow) -> str | None:
        """Why a queued job is not running yet, when nothing will run it as things stand."""
        if job.status != "queued":
            return None
        if self.queue is None:
            return "no training worker runs with this server; the job waits until one does"
        return self.queue.waiting_reason(job)

    def resolve_device(self, requested: str | None) -> str:
        """The device a new job asks for (raises LookupError or ValueError, said to the
        client as a 422): one this machine has, or in scale-out one a worker may have."""
        if self.queue is None:
            return resolve_device(requested, self.settings.device)
        return self.queue.resolve_device(requested, self.settings.device)

    def readiness(self) -> tuple[bool, dict[str, str]]:
        """Whether this process can serve: the metadata store answers, the data directory
        exists, and workers run (embedded) or the broker and object store answer (scale-out,
        where workers scale on their own and are not this API's readiness)."""
        checks = {"database": self.meta.ping(),
                  "data_dir": disk_state(self.settings.data_dir, self.settings.min_free_bytes)}
        if self.stopping.is_set():
            checks["server"] = "stopping"
        readiness = getattr(self.queue, "readiness", None)
        if readiness is not None:
            checks.update(readiness())
            checks["artifacts"] = self.artifacts.check()
        elif self.queue is not None:
            alive = getattr(self.queue, "alive", None)
            checks["workers"] = f"{alive} alive" if alive else "none alive"
        ok = all(v == "ok" or v.endswith(" alive") and not v.startswith("none")
                 for v in checks.values())
        return ok, checks

    def check_room(self) -> None:
        """Before new data is stored: a 507 while the disk keeps less than
        ``min_free_bytes`` (that space is for the jobs already running)."""
        if not has_room(self.settings.data_dir, self.settings.min_free_bytes):
            raise InsufficientStorage()

    def free_reserve(self) -> bool:
        """Give up the space reserve (the disk is full and a delete must commit)."""
        reserve = getattr(self.queue, "reserve", None)
        return bool(reserve is not None and reserve.release())

    def freeing_space(self, delete: Callable[[], T]) -> T:
        """Run a delete; on a full disk give up the space reserve and run it once more (the
        commit that frees space may need a little itself)."""
        try:
            return delete()
        except Exception as e:
            if not is_disk_full(e) or not self.free_reserve():
                raise
        return delete()

    def catalog_moved(self, deleted: str | None = None) -> None:
        """What names, aliases and "latest" mean changed here (a model imported or deleted,
        an alias moved, a traffic split set): predict re-resolves them at once in this
        process and, through the queue's catalog counter (shared memory embedded, Redis in
        scale-out, polled every 50 ms), on every API process. (Another API process may
        still answer for a deleted model *by id* from its cache until it restarts.)"""
        self.predictor.catalog_changed()
        self.predictor.forget(deleted)
        bump = getattr(self.queue, "bump_catalog", None) or getattr(
            getattr(self.queue, "catalog_version", None), "bump", None)
        if bump is not None:
            try:
                bump()
            except Exception:  # noqa: BLE001 - stored; others see it at the next bump
                log.warning("could not bump the catalog counter", exc_info=True)

    def begin_shutdown(self) -> None:
        """SIGTERM arrived: long polls and event streams answer now, the pool stops
        replacing workers. Called from the signal handler, before open requests drain."""
        self.stopping.set()
        self.waiters.shutdown()
        for hook in self.shutdown_hooks:
            hook()
        begin_stop = getattr(self.queue, "begin_stop", None)
        if begin_stop is not None:
            begin_stop()

    def on_event(self, event: dict[str, Any]) -> None:
        """An event from the embedded pool's workers: a model created (predict looks
        again), a job or a sweep ended (its long polls answer)."""
        if event.get("event") == "model_created" or (
                event.get("event") == "sweep_finished" and event.get("registered")):
            self.predictor.catalog_changed()
        if event.get("event") == "sweep_finished":
            self.waiters.finished(event["sweep_id"])
        if event.get("event") in ("model_created", "job_finished") and "job_id" in event:
            self.waiters.finished(event["job_id"])


def build_services(settings: Settings, *, with_workers: bool = True) -> Services:
    """Everything one app runs with. The embedded pool takes the data directory's lock
    first (a second server there exits with one line), before the schema is touched."""
    settings.ensure_dirs()
    meta = MetadataStore(settings.resolved_database_url)  # connects on first use
    artifacts = open_artifacts(settings.resolved_artifacts, settings.artifacts_endpoint_url)
    queue: JobQueue | None = None
    catalog_version: Callable[[], int] | None = None
    pool = None
    if settings.queue == "celery":  # workers run elsewhere: this process only publishes
        from service.worker.celery.queue import CeleryQueue

        celery_queue = CeleryQueue(settings, meta)
        queue = celery_queue
        catalog_version = celery_queue.catalog_version
    elif with_workers and settings.workers > 0:
        from service.worker.local import LocalWorkerPool

        pool = LocalWorkerPool(settings, meta, artifacts)
        queue = pool
        catalog_version = pool.catalog_version
    meta.create_schema()
    predictor = Predictor(meta, artifacts, catalog_version)
    services = Services(settings, meta, artifacts, predictor, queue)
    if pool is not None:
        pool.on_event = services.on_event
        services.waiters.pushed = True
    return services
