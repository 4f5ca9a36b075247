"""The embedded queue: worker processes beside the API, fed from the metadata store.

The API commits a job as queued, then releases a semaphore token; an idle worker takes the
token and claims the oldest queued job with an atomic UPDATE. Without a token a worker still
looks every second, so jobs requeued after a crash or a restart are never stranded.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from typing import Any

from service.config import Settings
from service.store.idempotency import release_unfinished
from service.store.upkeep import DataDirLock, Reserve, die_with_parent, has_room, sweep_orphans
from service.worker.forkserver import worker_context
from service.worker.identity import worker_name

log = logging.getLogger(__name__)

EventFn = Callable[[dict[str, Any]], None]


def worker_main(
    settings: Settings,
    wake: Any,
    stop: Any,
    events: Any,
    catalog: Any,
    parent: int,
) -> None:
    """Entry point of one worker process. ``parent``: the server's pid, given by the server
    (a server killed while this process was still starting is not its parent any more:
    then it ends here, before it could take a job the next server also recovers)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the API; it stops us
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the fork server ignores it; we do not
    _let_go_of_fork_server()
    die_with_parent()  # the loop also ends when getppid() changes
    watched = started_by(parent)
    if watched is None:  # set too late: the server died while this one started
        return
    from service.logs import configure_logging

    configure_logging(settings.log_level)
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // settings.workers))
    from service.store.artifacts import open_artifacts
    from service.store.jobs import PREDICT
    from service.store.metadata import MetadataStore
    from service.worker.batches import claim_trials, run_trials
    from service.worker.runner import moves_catalog, run_job, warm_up

    warm_up()
    meta = MetadataStore(settings.resolved_database_url)
    artifacts = open_artifacts(settings.resolved_artifacts, settings.artifacts_endpoint_url)
    name = worker_name()
    log.info("worker %s ready", name)

    def notify(event: dict[str, Any]) -> None:
        if moves_catalog(event):
            with catalog.get_lock():  # bumped before and after the commit: see serving/predictor.py
                catalog.value += 1
        if event["event"] != "model_committing":
            events.put(event)

    backoff = _Backoff(stop)
    room = max(settings.min_free_bytes, 1 << 20)
    while not stop.is_set() and os.getppid() == watched:
        if not has_room(settings.data_dir, room):  # a job now would fail at its checkpoint
            backoff.wait(f"worker {name}: the disk under {settings.data_dir} is full")
            continue
        try:
            job = meta.claim_next(name)
        except Exception as e:  # the store is away or its disk is full: wait, do not die
            backoff.wait(f"worker {name} cannot claim jobs ({type(e).__name__}: {e})")
            continue
        backoff.reset()
        if job is None:
            wake.acquire(timeout=1.0)
            continue
        try:
            # a sweep's trials that share their work, shared out between the workers
            batch = (claim_trials(meta, job, name, settings.workers)
                     if job.task != PREDICT else [job])  # a batch prediction runs alone
            log.info("worker %s took job %s%s", name, job.id,
                     f" and {len(batch) - 1} trials of its sweep" if len(batch) > 1 else "")
            if len(batch) > 1:
                run_trials(batch, name, meta, artifacts, settings.progress_interval_s, notify)
            else:
                run_job(job, name, meta, artifacts, settings.progress_interval_s, notify,
                        settings.predict_chunk_rows)
        except Exception:  # its end could not be recorded: the job goes back to the queue
            log.exception("worker %s: the store failed under job %s; it goes back to the queue",
                          name, job.id)
            _give_back(meta, name, settings.max_job_attempts, backoff)


def _let_go_of_fork_server() -> None:
    """A forked worker closes its copy of the fork server's "alive" pipe. The fork server
    hands one to every process it forks and ends only once all of them are closed: with a
    worker holding one, a server killed with -9 would leave its fork server running, and
    so its workers too (they die with their parent, the fork server), still training jobs
    the next server recovers and runs again. (multiprocessing keeps the descriptor in a
    private attribute; a Python without it leaves nothing to close.)"""
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    fd = getattr(server, "_forkserver_alive_fd", None)
    if server is not None and fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass
        server._forkserver_alive_fd = None


def started_by(server: int) -> int | None:
    """The pid whose end means the server ``server`` is gone, as this process's parent:
    the server itself (a spawned worker) or the fork server the server started (a forked
    one, see ``worker_context``); None when the parent is neither (the server died while
    this process started, and it was handed to another parent)."""
    parent = os.getppid()
    if parent == server:
        return parent
    try:  # the parent's own parent: field 4 of /proc/PID/stat, after the command's ")"
        with open(f"/proc/{parent}/stat", "rb") as f:
            grandparent = int(f.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return parent if grandparent == server else None


class _Backoff:
    """Waits that grow from half a second to five while a fault lasts; a stop ends them."""

    def __init__(self, stop: Any) -> None:
        self.stop = stop
        self.delay = 0.5
        self.said = False

    def wait(self, why: str) -> None:
        if not self.said:  # once per fault, not once per retry
            log.warning("%s; retrying until it clears", why)
            self.said = True
        self.stop.wait(self.delay)
        self.delay = min(self.delay * 2, 5.0)

    def reset(self) -> None:
        if self.said:
            log.info("the fault cleared; back at work")
        self.delay, self.said = 0.5, False


def _give_back(meta: Any, name: str, max_attempts: int, backoff: _Backoff) -> None:
    """Put this worker's job back in the queue, the attempt refunded (the job did nothing
    wrong), once the store takes the write; a stop leaves it to the pool's own recovery."""
    while not backoff.stop.is_set():
        try:
            meta.requeue_running([name], max_attempts, refund=True)
        except Exception as e:
            backoff.wait(f"worker {name} cannot give its job back ({type(e).__name__})")
            continue
        backoff.reset()
        return


class LocalWorkerPool:
    """Starts, watches and stops the worker processes of the embedded mode."""

    def __init__(self, settings: Settings, meta: Any, artifacts: Any,
                 on_event: EventFn | None = None) -> None:
        self.settings = settings
        self.meta = meta
        self.artifacts = artifacts
        self.on_event = on_event
        self._ctx = worker_context()
        # a wake for each job queued, but never more waiting than there are workers: each
        # wake beyond that only sends an idle worker to a claim that finds nothing (a
        # hundred submits left a hundred, spent as a hundred empty claim queries)
        slots = max(1, settings.workers)
        self._wake: Any = self._ctx.BoundedSemaphore(slots)
        for _ in range(slots):
            self._wake.acquire()
        self._stop: Any = self._ctx.Event()
        self._events: Any = self._ctx.Queue()
        self._catalog: Any = self._ctx.Value("q", 0)
        self._procs: list[BaseProcess] = []
        self._threads: list[threading.Thread] = []
        self._closing = threading.Event()
        self._spawning = threading.Lock()  # held while a worker starts; stop waits for it
        self._lost: dict[str, bool] = {}  # dead workers whose jobs are still to recover
        self.reserve = Reserve(settings.data_dir)
        # before anything is touched: a second server here would recover (and so run twice)
        # the jobs this one runs
        self._lock = DataDirLock(settings.data_dir)
        self._lock.acquire()

    @property
    def alive(self) -> int:
        return sum(p.is_alive() for p in self._procs)

    def start(self) -> None:
        # this server is the only one running jobs on this store, so a job still "running"
        # was cut off by the last shutdown or crash
        self.meta.requeue_running(None, self.settings.max_job_attempts)
        release_unfinished(self.meta)  # Idempotency-Keys of requests the last run cut off
        self._upkeep(grace_s=0.0)  # no other server writes here: every orphan is one
        for target in (self._watch, self._pump_events):
            t = threading.Thread(target=target, daemon=True, name=f"fitserve-{target.__name__}")
            t.start()
            self._threads.append(t)

    def _spawn(self) -> BaseProcess:
        p = self._ctx.Process(
            target=worker_main,
            args=(self.settings, self._wake, self._stop, self._events, self._catalog,
                  os.getpid()),
            name="fitserve-worker",
            daemon=True,
        )
        p.start()
        return p

    def catalog_version(self) -> int:
        """Moves whenever a worker creates a model; read without a lock (one word)."""
        return int(self._catalog.value)

    def bump_catalog(self) -> None:
        """A model got a name in this process (a sweep's winner): names re-resolve."""
        with self._catalog.get_lock():
            self._catalog.value += 1

    def notify(self, job_id: str | None = None, device: str | None = None) -> None:
        """A job was queued: wake one idle worker (any of them takes any job)."""
        self._wake_one()

    def _wake_one(self) -> None:
        try:
            self._wake.release()
        except ValueError:  # every worker has a wake waiting already: it claims this job
            pass

    def waiting_reason(self, job: Any) -> str | None:
        if self.alive == 0:
            return "none of this server's training workers is running (they are starting)"
        return None

    def resolve_device(self, requested: str | None, default: str) -> str:
        from service.training.devices import resolve_device

        return resolve_device(requested, default)

    def _watch(self) -> None:
        """Replace dead workers and put their jobs back in the queue; now and then, sweep
        the data directory. A fault here (the store away, the disk full) is retried on the
        next turn: this thread never dies of one."""
        next_sweep = time.monotonic() + self.settings.sweep_interval_s
        # the first workers start here, not in ``start``: the first start also starts the
        # fork server, which imports torch (2 s) before it forks; the API serves meanwhile
        self._start_missing()
        while not self._closing.wait(0.5):
            for p in [p for p in self._procs if not p.is_alive()]:
                with self._spawning:
                    if self._closing.is_set():
                        break
                    # stopped by a signal meant for the whole server (SIGTERM to its process
                    # group): not the job's fault, so its attempt does not count
                    on_purpose = p.exitcode in (-signal.SIGTERM, -signal.SIGINT)
                    log.error("worker pid %s died (exit code %s); restarting it", p.pid,
                              p.exitcode)
                    self._lost[worker_name(p.pid)] = on_purpose
                    self._procs.remove(p)
            self._start_missing()  # the dead ones' replacements
            self._recover_lost()
            try:  # off the commits that fill the WAL (session.py's WAL_BACKSTOP_BYTES)
                self.meta.checkpoint()
            except Exception as e:  # noqa: BLE001 - the store away: the next turn tries again
                log.debug("the WAL checkpoint failed: %s", e)
            if time.monotonic() >= next_sweep:
                next_sweep = time.monotonic() + self.settings.sweep_interval_s
                self._upkeep(self.settings.orphan_grace_s)

    def _start_missing(self) -> None:
        """Start workers up to the number set: all of them at first, then one for each that
        died (one whose start failed is tried again at the next turn)."""
        while len(self._procs) < self.settings.workers:
            with self._spawning:
                if self._closing.is_set():
                    return
                try:
                    self._procs.append(self._spawn())
                except Exception:
                    log.exception("a training worker could not start; trying again")
                    return
            self._wake_one()

    def _recover_lost(self) -> None:
        for name, on_purpose in list(self._lost.items()):
            if self._closing.is_set():
                return  # stop() recovers them, refunded
            try:
                self.meta.requeue_running([name], self.settings.max_job_attempts,
                                          refund=on_purpose)
            except Exception as e:  # the store is away or full: next turn
                log.warning("could not recover the jobs of worker %s yet (%s)", name,
                            type(e).__name__)
                return
            del self._lost[name]
            self._wake_one()

    def _upkeep(self, grace_s: float) -> None:
        """Remove files a crash left behind; put the space reserve back when there is room."""
        try:
            sweep_orphans(self.meta, self.artifacts, grace_s)
            self.reserve.ensure()
        except Exception:
            log.exception("the data directory sweep failed; it runs again later")

    def begin_stop(self) -> None:
        """The server is stopping (SIGTERM): from now on a worker that exits is not replaced,
        and its job is recovered by ``stop`` with its attempt refunded."""
        self._closing.set()

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
        with self._spawning:  # no worker starts after this
            pass
        for p in self._procs:
            if p.is_alive():
                p.terminate()
        for p in self._procs:
            p.join(timeout)
            if p.is_alive():
                p.kill()
                p.join(timeout)
        names = [worker_name(p.pid) for p in self._procs if p.pid is not None]
        names += list(self._lost)
        try:
            if names:
                self.meta.requeue_running(names, self.settings.max_job_attempts, refund=True)
        except Exception:  # the next start recovers every running job
            log.exception("could not put the stopped workers' jobs back in the queue")
        for t in self._threads:
            t.join(1.0)
        self._events.close()
        self._events.join_thread()
        # their 10 semaphores (the queue's 3, the event's 5, the wake's, the catalog's lock)
        # are unlinked when freed, here: at exit is too late after a SIGTERM, which uvicorn
        # raises again once stopped, so the process ends by the signal and runs no atexit
        # (the resource tracker then warned of "leaked semaphore objects")
        self._wake = self._stop = self._events = self._catalog = None
        self._lock.release()
