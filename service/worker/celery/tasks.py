"""``fitserve worker``: a Celery worker on the queue of one device kind, and the task body.

The main process of a worker beats its name into the registry (so the API can tell which
device kinds are served) and runs a reaper; its pool's child processes run jobs, one at a
time each, with ``run_job``, the same function as the embedded mode's.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from celery import signals

from service.config import Settings
from service.errors import NotFound, ServiceError, fault_of
from service.store.artifacts import ArtifactStore, open_artifacts
from service.store.jobs import PREDICT
from service.store.metadata import MetadataStore
from service.worker.beats import beating
from service.worker.celery.app import TASK_NAME, make_celery, publish, queue_size
from service.worker.celery.batches import run_with_trials
from service.worker.celery.broker import CatalogCounter, WorkerRegistry, device_kind, redis_client
from service.worker.identity import pid_alive, worker_name
from service.worker.reaper import Reaper
from service.worker.runner import moves_catalog, run_job, warm_up

log = logging.getLogger(__name__)


@dataclass
class _Child:
    """What a pool process runs jobs with, built after the fork (no shared connections)."""

    settings: Settings
    name: str
    meta: MetadataStore
    artifacts: ArtifactStore
    catalog: CatalogCounter

    def notify(self, event: dict[str, Any]) -> None:
        if moves_catalog(event):
            try:  # bumped before and after the commit: see serving/predictor.py
                self.catalog.bump()
            except Exception as e:  # noqa: BLE001 - the API still sees the model, later
                log.warning("could not bump the catalog counter: %s", e)

    def close(self) -> None:
        self.meta.dispose()
        self.catalog.client.close()


@dataclass
class _Main:
    settings: Settings
    kind: str
    nodename: str
    app: Any
    meta: MetadataStore | None = None
    registry: WorkerRegistry | None = None
    reaper: Any = None
    stop: threading.Event | None = None


_main: _Main | None = None
_child: _Child | None = None


def child_context(settings: Settings) -> _Child:
    """Open the stores of a job-running process (called once per pool process)."""
    return _Child(
        settings=settings,
        name=worker_name(),
        meta=MetadataStore(settings.resolved_database_url),
        artifacts=open_artifacts(settings.resolved_artifacts, settings.artifacts_endpoint_url),
        catalog=CatalogCounter(redis_client(settings.broker_url), settings.broker_prefix),
    )


def execute(job_id: str, ctx: _Child | None = None) -> str:
    """The body of ``fitserve.run_job``: claim this job and run it, or drop a delivery that
    has nothing left to do. Returns the job's final status, or "skipped"."""
    ctx = ctx or _child or _open_child()
    job = ctx.meta.claim(job_id, ctx.name) or _take_over_from_dead_holder(ctx, job_id)
    if job is None:
        log.info("job %s: delivery dropped, the job is not queued", job_id)
        return "skipped"
    log.info("worker %s took job %s", ctx.name, job.id)
    with _heartbeat(ctx.meta, job.id, ctx.name, ctx.settings.heartbeat_interval_s):
        try:  # a sweep's trial trains with the queued trials it batches with (batches.py)
            batched = (run_with_trials(ctx, job, _main_concurrency())
                       if job.task != PREDICT else None)  # a batch prediction runs alone
            if batched is not None:
                return batched
            return run_job(job, ctx.name, ctx.meta, ctx.artifacts,
                           ctx.settings.progress_interval_s, ctx.notify,
                           ctx.settings.predict_chunk_rows)
        except Exception as e:
            if isinstance(e, ServiceError) or fault_of(e) is None or not _give_back(ctx, e):
                raise  # not a fault of the store's, or it never took the job back
            return GIVEN_BACK


GIVEN_BACK = "given back"
"""``execute``'s answer when the store failed under the job and the job went back to the
queue, its attempt refunded: the task then publishes itself again, a little later."""

GIVE_BACK_WAITS = (0.5, 1.0, 2.0, 4.0, 8.0)
RETRY_AFTER_S = 5


def _give_back(ctx: _Child, fault: Exception) -> bool:
    """Put this process's job back in the queue with its attempt refunded (the job did
    nothing wrong), as soon as the store takes the write. The heartbeat goes on meanwhile,
    so the reaper does not take the job (and an attempt) first. Whether it was put back."""
    log.warning("the store failed under worker %s (%s); giving its job back to the queue",
                ctx.name, type(fault).__name__)
    for wait in (0.0, *GIVE_BACK_WAITS):
        time.sleep(wait)
        try:
            ctx.meta.requeue_running([ctx.name], ctx.settings.max_job_attempts, refund=True)
        except Exception as e:  # noqa: BLE001 - still failing: wait longer
            log.warning("worker %s cannot give its job back yet (%s)", ctx.name,
                        type(e).__name__)
            continue
        return True
    return False  # the heartbeat stops with this task: the reaper recovers the job


def _run_job_task(task: Any, job_id: str) -> str:
    """``fitserve.run_job``, as Celery calls it."""
    status = execute(job_id)
    if status == GIVEN_BACK:  # the same message again, once the fault may have cleared
        raise task.retry(countdown=RETRY_AFTER_S, max_retries=None)
    return status


def _take_over_from_dead_holder(ctx: _Child, job_id: str) -> Any:
    """A redelivery after a pool process died mid-job (``reject_on_worker_lost``) finds the
    job still marked running by that process; on its own machine we can see it is gone and
    recover the job now rather than after the heartbeat timeout."""
    try:
        row = ctx.meta.get_job(job_id, tenant=None, task=None)
    except NotFound:
        return None
    if row.status != "running" or not row.worker:
        return None
    host, _, pid = row.worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or pid_alive(int(pid)):
        return None
    log.warning("job %s: its process %s is gone; running it again", job_id, row.worker)
    ctx.meta.requeue_running([row.worker], ctx.settings.max_job_attempts)
    return ctx.meta.claim(job_id, ctx.name)


def _heartbeat(meta: MetadataStore, job_id: str, worker: str, every: float
               ) -> AbstractContextManager[None]:
    """Keep the job marked alive between progress writes (data loading, a closed-form fit,
    a slow device): a silent job would be taken by the reaper. A beat the store refuses
    (the job is no longer ours) ends the beats: its finish will be refused too."""
    return beating(lambda: meta.heartbeat(job_id, worker), every, f"job {job_id}")


# ------------------------------------------------------------ process life


def _init_child(**_: Any) -> None:
    if _main is None:
        return
    if _main.meta is not None:  # forked after the main process opened its own connections
        _main.meta.engine.dispose(close=False)
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // _main_concurrency()))
    warm_up()
    try:
        _open_child()
    except Exception:  # e.g. the store is not reachable yet: the first task tries again
        log.exception("worker process could not open its stores; retrying at its first job")


def _open_child() -> _Child:
    global _child
    if _main is None:
        raise RuntimeError("execute() outside a fitserve worker process")
    _child = child_context(_main.settings)
    log.info("worker process %s ready", _child.name)
    return _child


def _main_concurrency() -> int:
    return int(_main.app.conf.worker_concurrency or 1) if _main else 1


def _on_ready(**_: Any) -> None:
    if _main is None:
        return
    m = _main
    s = m.settings
    m.meta = MetadataStore(s.resolved_database_url)
    m.registry = WorkerRegistry(redis_client(s.broker_url), s.broker_prefix,
                                s.heartbeat_timeout_s)
    m.reaper = Reaper(
        m.meta,
        lambda job_id, device: publish(m.app, job_id, device),
        lambda kind: queue_size(m.app, kind),
        interval_s=s.reaper_interval_s,
        heartbeat_timeout_s=s.heartbeat_timeout_s,
        max_attempts=s.max_job_attempts,
    )
    m.stop = threading.Event()
    registry, stop = m.registry, m.stop

    def beat() -> None:
        while True:
            try:
                registry.beat(m.kind, m.nodename)
            except Exception as e:  # noqa: BLE001 - the broker is away; keep trying
                log.warning("worker registry unreachable: %s", e)
            if stop.wait(s.heartbeat_interval_s):
                return

    threading.Thread(target=beat, daemon=True, name="fitserve-registry").start()
    m.reaper.start()
    log.info("worker %s consuming the %s queue", m.nodename, m.kind)


def _on_shutdown(**_: Any) -> None:
    m = _main
    if m is None or m.stop is None:
        return
    m.stop.set()
    m.reaper.stop()
    try:
        if m.registry is not None:
            m.registry.leave(m.kind, m.nodename)
    except Exception as e:  # noqa: BLE001 - the entry fades out by itself
        log.warning("could not leave the worker registry: %s", e)


def run_worker(settings: Settings, device: str, concurrency: int,
               name: str | None = None) -> None:
    """Run a Celery worker on ``device``'s queue until it is stopped (blocks)."""
    global _main
    kind = device_kind(device)
    meta = MetadataStore(settings.resolved_database_url)
    meta.create_schema()  # the same migrations as the API's; they take turns on PostgreSQL
    meta.dispose()
    app = make_celery(settings)
    app.task(name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True,
             ignore_result=True)(_run_job_task)
    app.conf.worker_concurrency = concurrency
    nodename = name or f"{kind}-{os.getpid()}@{socket.gethostname()}"
    _main = _Main(settings=settings, kind=kind, nodename=nodename, app=app)
    signals.worker_process_init.connect(_init_child, weak=False)
    signals.worker_ready.connect(_on_ready, weak=False)
    signals.worker_shutdown.connect(_on_shutdown, weak=False)
    app.worker_main([
        "worker",
        f"--loglevel={settings.log_level.upper()}",
        "--queues", kind,
        "--concurrency", str(concurrency),
        "--hostname", nodename,
        "--pool", "prefork",
        "--prefetch-multiplier", "1",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ])
