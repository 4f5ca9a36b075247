"""The collaborators one app runs with, built from settings (or handed in by a test)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

from service.config import Settings
from service.predictor import Predictor
from service.store.artifacts import ArtifactStore
from service.store.metadata import MetadataStore

log = logging.getLogger(__name__)


class JobQueue(Protocol):
    def notify(self) -> None: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


@dataclass
class Services:
    settings: Settings
    meta: MetadataStore
    artifacts: ArtifactStore
    predictor: Predictor
    queue: JobQueue | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def job_submitted(self, job_id: str) -> None:
        if self.queue is not None:
            self.queue.notify()

    def on_event(self, event: dict[str, Any]) -> None:
        if event.get("event") == "model_created":
            self.predictor.catalog_changed()


def build_services(settings: Settings, *, with_workers: bool = True) -> Services:
    settings.ensure_dirs()
    meta = MetadataStore(settings.resolved_database_url)
    meta.create_schema()
    artifacts = ArtifactStore(settings.data_dir)
    queue = None
    catalog_version = None
    if with_workers and settings.workers > 0:
        from service.worker.local import LocalWorkerPool

        pool = LocalWorkerPool(settings, meta)
        queue = pool
        catalog_version = pool.catalog_version
    predictor = Predictor(meta, artifacts, catalog_version)
    services = Services(settings, meta, artifacts, predictor, queue)
    if queue is not None:
        pool.on_event = services.on_event
    return services
