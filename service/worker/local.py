"""The embedded queue: worker processes beside the API, fed from the metadata store.

The API commits a job as queued, then releases a semaphore token; an idle worker takes the
token and claims the oldest queued job with an atomic UPDATE. Without a token a worker still
looks every second, so jobs requeued after a crash or a restart are never stranded.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing as mp
import os
import queue
import signal
import sys
import threading
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from typing import Any

from service.config import Settings
from service.worker.identity import worker_name

log = logging.getLogger(__name__)

EventFn = Callable[[dict[str, Any]], None]


def _die_with_parent() -> None:
    """A worker must not outlive a server killed with -9: it would keep taking jobs that the
    next server also recovers. Linux can deliver SIGKILL when the parent goes."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass  # the getppid() check in the loop still ends us


def worker_main(
    settings: Settings,
    wake: Any,
    stop: Any,
    events: Any,
    catalog: Any,
) -> None:
    """Entry point of one worker process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the API; it stops us
    parent = os.getppid()
    _die_with_parent()
    from service.logs import configure_logging

    configure_logging(settings.log_level)
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // settings.workers))
    from service.store.artifacts import open_artifacts
    from service.store.metadata import MetadataStore
    from service.worker.runner import run_job, warm_up

    warm_up()
    meta = MetadataStore(settings.resolved_database_url)
    artifacts = open_artifacts(settings.resolved_artifacts, settings.artifacts_endpoint_url)
    name = worker_name()
    log.info("worker %s ready", name)

    def notify(event: dict[str, Any]) -> None:
        if event["event"] in ("model_committing", "model_created"):
            with catalog.get_lock():  # bumped before and after the commit: see serving/predictor.py
                catalog.value += 1
        if event["event"] != "model_committing":
            events.put(event)

    while not stop.is_set() and os.getppid() == parent:
        job = meta.claim_next(name)
        if job is None:
            wake.acquire(timeout=1.0)
            continue
        log.info("worker %s took job %s", name, job.id)
        run_job(job, name, meta, artifacts, settings.progress_interval_s, notify)


class LocalWorkerPool:
    """Starts, watches and stops the worker processes of the embedded mode."""

    def __init__(self, settings: Settings, meta: Any, on_event: EventFn | None = None) -> None:
        self.settings = settings
        self.meta = meta
        self.on_event = on_event
        self._ctx = mp.get_context("spawn")
        self._wake = self._ctx.Semaphore(0)
        self._stop = self._ctx.Event()
        self._events: Any = self._ctx.Queue()
        self._catalog: Any = self._ctx.Value("q", 0)
        self._procs: list[BaseProcess] = []
        self._threads: list[threading.Thread] = []
        self._closing = threading.Event()

    @property
    def alive(self) -> int:
        return sum(p.is_alive() for p in self._procs)

    def start(self) -> None:
        # this server is the only one running jobs on this store, so a job still "running"
        # was cut off by the last shutdown or crash
        self.meta.requeue_running(None, self.settings.max_job_attempts)
        for _ in range(self.settings.workers):
            self._procs.append(self._spawn())
        for target in (self._watch, self._pump_events):
            t = threading.Thread(target=target, daemon=True, name=f"fitserve-{target.__name__}")
            t.start()
            self._threads.append(t)

    def _spawn(self) -> BaseProcess:
        p = self._ctx.Process(
            target=worker_main,
            args=(self.settings, self._wake, self._stop, self._events, self._catalog),
            name="fitserve-worker",
            daemon=True,
        )
        p.start()
        return p

    def catalog_version(self) -> int:
        """Moves whenever a worker creates a model; read without a lock (one word)."""
        return int(self._catalog.value)

    def notify(self, job_id: str | None = None, device: str | None = None) -> None:
        """A job was queued: wake one idle worker (any of them takes any job)."""
        self._wake.release()

    def waiting_reason(self, job: Any) -> str | None:
        if self.alive == 0:
            return "none of this server's training workers is running (they are restarting)"
        return None

    def resolve_device(self, requested: str | None, default: str) -> str:
        from service.training.devices import resolve_device

        return resolve_device(requested, default)

    def _watch(self) -> None:
        """Replace dead workers and put their jobs back in the queue."""
        while not self._closing.wait(0.5):
            for i, p in enumerate(self._procs):
                if p.is_alive() or self._closing.is_set():
                    continue
                log.error("worker pid %s died (exit code %s); restarting it", p.pid, p.exitcode)
                self.meta.requeue_running([worker_name(p.pid)], self.settings.max_job_attempts)
                self._procs[i] = self._spawn()
                self._wake.release()

    def _pump_events(self) -> None:
        while not self._closing.is_set():
            try:
                event = self._events.get(timeout=0.5)
            except queue.Empty:
                continue
            except (EOFError, OSError):
                return
            if self.on_event is not None:
                try:
                    self.on_event(event)
                except Exception:
                    log.exception("event handler failed for %s", event)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the workers; jobs they were running go back to the queue for the next start."""
        self._closing.set()
        self._stop.set()
        for p in self._procs:
            if p.is_alive():
                p.terminate()
        for p in self._procs:
            p.join(timeout)
            if p.is_alive():
                p.kill()
                p.join(timeout)
        names = [worker_name(p.pid) for p in self._procs if p.pid is not None]
        if names:
            self.meta.requeue_running(names, self.settings.max_job_attempts, refund=True)
        for t in self._threads:
            t.join(1.0)
        self._events.close()
