"""The sweep controller: asks Optuna for trials, queues each as a job, reads back how they
end, prunes, and registers the winner.

One controller runs in every API process (the sweeps router's lifespan starts it). It holds
the sweeps it advances with a row-level claim refreshed at every step, like a worker's
heartbeat on its job: in the embedded mode the one server holds them all (and takes them
back at once after a restart); in scale-out another API process takes over a sweep whose
holder fell silent for ``FITSERVE_HEARTBEAT_TIMEOUT_S``. Whoever takes a sweep rebuilds its
study from the trials stored (study.py), so nothing that ended runs again.

Each step of a held sweep, in order:

1. trials whose job ended are recorded (in number order): a succeeded job's objective is
   read from its model's metrics, after the pruner has seen its losses at the rungs it
   passed (read from its history: a trial that ran through a rung before it was checked is
   judged all the same); a failed or diverged job is a failed trial with its job's error
   (``SweepRecords.trial_end``). Where no pruner judges them, a closed-form batch records
   its own trials in the transaction that ends their jobs (``record_trial_ends``), and
   ends the sweep when they were its last (as in 5.); the controller then only tells its
   study of them, before it next asks;
2. running trials that reached a rung report their latest loss to the pruner; a pruned one
   has its job cancelled (and ends as ``pruned``);
3. a sweep being cancelled cancels every trial still queued or running;
4. new trials are asked for while fewer than ``max_parallel`` are open;
5. once ``max_trials`` have ended, the best trial's model is registered under the sweep's
   ``model_name`` (a new version) and the sweep ends (``SweepRecords.end_with_best``, in
   one transaction).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import ValidationError

from service.errors import ActiveJobsExceeded, Conflict, NotFound, fault_of
from service.jobs.status import ACTIVE, FINISHED
from service.jobs.sweeps.objectives import uses_validation
from service.jobs.sweeps.space import Dimension, apply
from service.jobs.sweeps.study import StudyConfig, SweepStudy, rungs
from service.store.sweeps import OPEN, NewTrial, SweepRecords, TrialState, trial_end
from service.store.tables import SweepRow, utcnow
from service.training.spec import TrainingSpec

if TYPE_CHECKING:
    from service.services import Services

log = logging.getLogger(__name__)

POLL_S = 0.1
"""Time between two steps while the controller holds an active sweep."""
IDLE_S = 1.0
"""Time between two looks for sweeps to take while it holds none (a new sweep wakes it),
or while every sweep it holds is quiet: in the embedded mode, where the pool's events wake
it at each job's end, a sweep with every trial queued and no pruner has nothing for it to
do until one ends."""


class _LostHold(Exception):
    """Another controller took the sweep: this one stops advancing it."""


def sweep_records(services: Services) -> SweepRecords:
    """The sweep records over the app's metadata store (one per app)."""
    store = services.extra.get("sweep_records")
    if store is None:
        store = services.extra["sweep_records"] = SweepRecords(services.meta)
    return store


def study_config(sweep: SweepRow) -> StudyConfig:
    return StudyConfig(sweep.strategy, sweep.seed,
                       "maximize" if sweep.direction == "maximize" else "minimize",
                       tuple(Dimension.from_json(d) for d in sweep.search_space),
                       sweep.pruning)


class SweepController:
    """Advances the sweeps it holds; ``step`` is one pass (tests call it directly)."""

    def __init__(self, services: Services, name: str | None = None) -> None:
        self.services = services
        self.store = sweep_records(services)
        self.name = name or f"sweeps@{socket.gethostname()}:{os.getpid()}"
        self._studies: dict[str, SweepStudy] = {}
        # trials asked for whose jobs are not stored yet (the tenant's active-job limit)
        self._pending: dict[str, list[tuple[int, dict[str, Any], dict[str, Any]]]] = {}
        # ends recorded but not yet told to the study (no pruner: nothing reads them before
        # the study's next ask, and a sweep whose every trial was asked never needs them)
        self._untold: dict[str, list[tuple[int, str, float | None]]] = {}
        # the trials the study has as ended, or will be told of (in _untold)
        self._ended: dict[str, set[int]] = {}
        self._held: set[str] = set()
        self._quiet: set[str] = set()  # held sweeps that wait only for events (IDLE_S)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ the thread

    def start(self, *, only_controller: bool) -> None:
        """Run in a thread. ``only_controller``: no other process advances sweeps on this
        store (the embedded mode), so every hold left by a previous run is taken at once."""
        if only_controller:
            self.store.release_sweeps(None)
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name="fitserve-sweeps")
        self._thread.start()

    def wake(self) -> None:
        """A sweep was created or cancelled: step now rather than at the next poll."""
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
            try:
                self.store.release_sweeps(self.name)  # the next holder need not wait
            except Exception:
                log.exception("could not release the sweeps held by %s", self.name)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                held = self.step()
            except Exception as e:  # the store is away: the next step tries again
                if fault_of(e) is None:
                    log.exception("the sweep controller failed a step")
                held = 0
            self._wake.wait(POLL_S if held and not self._held <= self._quiet else IDLE_S)
            self._wake.clear()

    # ------------------------------------------------------------ one step

    def step(self) -> int:
        """Take the sweeps this controller may hold and advance each; returns how many it
        holds."""
        settings, now = self.services.settings, utcnow()
        stale = now - timedelta(seconds=settings.heartbeat_timeout_s)
        # the hold is refreshed once a heartbeat interval, not at every step
        fresh = now - timedelta(seconds=settings.heartbeat_interval_s)
        held = self.store.claim_sweeps(self.name, stale, fresh)
        for sweep_id in self._held - set(held):  # taken by another: its study is stale
            self._forget(sweep_id)
        for sweep_id in set(held) - self._held:  # taken now: rebuilt from the store
            self._forget(sweep_id)
        self._held = set(held)
        for sweep_id in held:
            try:
                self.advance(sweep_id)
            except _LostHold:
                self._forget(sweep_id)
                self._held.discard(sweep_id)
            except Exception as e:
                self._forget(sweep_id)  # rebuilt from what was stored at the next step
                if fault_of(e) is None:
                    log.exception("sweep %s: a step failed; it is retried", sweep_id)
                else:
                    raise
        return len(self._held)

    def _forget(self, sweep_id: str) -> None:
        self._studies.pop(sweep_id, None)
        self._pending.pop(sweep_id, None)
        self._untold.pop(sweep_id, None)
        self._ended.pop(sweep_id, None)
        self._quiet.discard(sweep_id)

    def advance(self, sweep_id: str) -> None:
        """One step of one held sweep (see the module's docstring)."""
        self._quiet.discard(sweep_id)
        sweep = self.store.get_sweep(sweep_id, tenant=None)
        if sweep.status not in ACTIVE:
            self._forget(sweep_id)
            return
        trials = self.store.trials(sweep_id)
        study = self._study(sweep, trials)
        known = self._ended.setdefault(sweep.id, set())
        recorded = [t for t in trials if t.trial.status != OPEN and t.number not in known]
        if recorded:  # ended by a worker's batch (no pruner): told before the next ask
            self._untold.setdefault(sweep.id, []).extend(
                (t.number, t.trial.status, t.trial.value) for t in recorded)
            known.update(t.number for t in recorded)
        status = {t.number: t.trial.status for t in trials}
        ended = [t for t in trials if t.trial.status == OPEN and t.job_status in FINISHED]
        if ended:
            status.update(self._settle(sweep, study, ended))
        if sweep.pruning and not sweep.cancel_requested:
            for t in trials:
                if status[t.number] == OPEN and t.job_status == "running" \
                        and not t.trial.prune_requested:
                    self._check_rungs(sweep, study, t)
        open_now = sum(1 for s in status.values() if s == OPEN)
        if sweep.cancel_requested:
            self._cancel_trials(sweep)
            if open_now == 0:
                self._end(sweep, "cancelled", error={"type": "cancelled",
                                                     "message": "cancelled"})
            return
        created = len(trials)
        room = min(sweep.max_trials - created, sweep.max_parallel - open_now)
        made: list[str] = []
        if room > 0:
            made = self._new_trials(sweep, study, room)
            created += len(made)
            open_now += made.count(OPEN)
        if created >= sweep.max_trials and open_now == 0:
            self._finish(sweep)
        elif (created >= sweep.max_trials and not sweep.pruning
              and self.services.waiters.pushed):  # ends only: the pool's events wake it
            self._quiet.add(sweep.id)

    # ------------------------------------------------------------ the study

    def _study(self, sweep: SweepRow, trials: list[TrialState]) -> SweepStudy:
        study = self._studies.get(sweep.id)
        pending = len(self._pending.get(sweep.id, ()))
        if study is not None and len(study) == len(trials) + pending:
            return study
        study = SweepStudy(study_config(sweep))
        for t in trials:
            tr = t.trial
            study.add(tr.number, tr.raw_params, tr.status, tr.value, tr.intermediate,
                      tr.system_attrs)
        self._pending.pop(sweep.id, None)
        self._untold.pop(sweep.id, None)  # the trials' rows told the new study
        self._ended[sweep.id] = {t.number for t in trials if t.trial.status != OPEN}
        self._studies[sweep.id] = study
        return study

    def _tell_untold(self, sweep_id: str, study: SweepStudy) -> None:
        """Tell the study the ends recorded since it was last asked, in the order recorded."""
        for number, status, value in self._untold.pop(sweep_id, ()):
            study.tell(number, status, value)

    # ------------------------------------------------------------ trials

    def _new_trials(self, sweep: SweepRow, study: SweepStudy, room: int) -> list[str]:
        """Ask for up to ``room`` trials and queue their jobs; returns the state of each
        trial stored: ``open``, or ``failed`` when the job schema refuses a combination of
        values. Trials are asked only as far as the tenant's active-job limit lets them run
        (an ask is not taken back); one asked but not stored (that limit, reached
        meanwhile) is queued at a later step. The embedded pool's workers each claim their
        share of a sweep's open trials as one batch. A TPE's trials are asked for and queued in
        one part (one transaction) per worker, each part waking one worker, so that the first
        batch starts while the next part is asked for (a TPE's ask reads every trial before
        it). A grid's or a random search's asks cost next to nothing (100 in 2 ms): their
        trials are queued in one part that wakes every worker, and the batches start
        together (in two parts, timed in a grid of 100, the second batch started some 15 ms
        after the first, its claim behind the second part's transaction, and ended last)."""
        meta, settings = self.services.meta, self.services.settings
        pending = self._pending.setdefault(sweep.id, [])
        capacity = settings.max_active_jobs - meta.count_active_jobs(sweep.tenant)
        if len(pending) < min(room, capacity):
            self._tell_untold(sweep.id, study)
        workers = max(1, settings.workers)
        # the embedded pool's workers, woken per part (a broker gets each trial's job)
        parts = workers if settings.queue == "local" and sweep.strategy == "tpe" else 1
        wakes = workers // parts if settings.queue == "local" else None
        size = -(-room // parts)
        made: list[str] = []
        while len(made) < room:
            part = min(size, room - len(made))
            queued = made.count(OPEN)
            while len(pending) < min(part, capacity - queued):
                pending.append(study.ask())
            got = self._queue_trials(sweep, study, pending[:part], wakes)
            made += got
            if len(got) < part:  # the active-job limit: the rest at a later step
                break
        return made

    def _queue_trials(self, sweep: SweepRow, study: SweepStudy,
                      asked: list[tuple[int, dict[str, Any], dict[str, Any]]],
                      wakes: int | None) -> list[str]:
        """Queue the jobs of trials asked for (one transaction); their states (see
        ``_new_trials``). Those the active-job limit leaves out stay pending. ``wakes``: how
        many of the embedded pool's workers to wake (None: a broker, told of every job)."""
        settings = self.services.settings
        pending = self._pending[sweep.id]
        made, jobs = [], []
        for number, params, raw in asked:
            attrs = study.system_attrs(number)
            try:
                spec = TrainingSpec.model_validate(apply(sweep.job, params))
            except ValidationError as e:
                err = e.errors()[0]
                where = ".".join(str(p) for p in err.get("loc", ()))
                message = f"the job refuses this combination: {where}: {err.get('msg')}"
                if self.store.add_refused_trial(
                        sweep.id, number, self.name, params, raw, attrs,
                        {"type": "invalid_input", "message": message}) is None:
                    raise _LostHold(sweep.id) from None
                pending.remove((number, params, raw))
                study.tell(number, "failed")
                self._ended.setdefault(sweep.id, set()).add(number)
                made.append("failed")
                continue
            jobs.append(NewTrial(number, spec.model_dump(mode="json"), spec.epochs, params,
                                 raw, attrs))
        if not jobs:
            return made
        try:
            job_ids = self.store.create_trials(sweep, self.name, jobs, settings.max_active_jobs)
        except ActiveJobsExceeded:
            return made  # kept in pending, queued at a later step
        except NotFound:  # the dataset was deleted under the sweep
            self._cancel_trials(sweep)
            self._end(sweep, "failed", error={
                "type": "dataset_missing",
                "message": "the sweep's dataset was deleted before every trial ran"})
            raise _LostHold(sweep.id) from None
        if job_ids is None:
            raise _LostHold(sweep.id)
        del pending[:len(jobs)]
        sweep.status = "running"  # create_trials started it
        # the embedded pool's workers claim a batch each and then drain the queue: a wake
        # per worker to start, not one per trial (each unused wake costs a worker a claim
        # query that finds nothing, on the cores the batches run on)
        for job_id in job_ids if wakes is None else job_ids[:wakes]:
            self.services.job_submitted(job_id, sweep.device)
        return made + [OPEN] * len(jobs)

    def _series(self, sweep: SweepRow, loss: Any, val: Any) -> Any:
        return val if uses_validation(sweep.objective) and val is not None else loss

    def _signed(self, sweep: SweepRow, loss: float) -> float:
        """A loss as the pruner compares it: higher is better when the objective is
        maximized (accuracy, R²), so the loss goes in negated."""
        return -loss if sweep.direction == "maximize" else loss

    def _settle(self, sweep: SweepRow, study: SweepStudy, ended: list[TrialState]
                ) -> dict[int, str]:
        """Record how the trials whose job ended came out (in number order: each is judged
        with the ones before it told); one transaction. Returns their states."""
        outcomes, untold = [], []
        if sweep.pruning:  # the pruner judges each trial with the ones before it told
            self._tell_untold(sweep.id, study)
        for t in ended:
            status, values = self._outcome(sweep, study, t)
            if sweep.pruning:
                study.tell(t.number, status, values["value"])
            else:  # a tell changes no system_attrs: told when the study is next asked
                untold.append((t.number, status, values["value"]))
            attrs = study.system_attrs(t.number)
            if attrs != t.trial.system_attrs:  # the pruner's records, say: written with it
                values["system_attrs"] = attrs
            outcomes.append((t.number, status, values))
        if not self.store.end_trials(sweep.id, self.name, outcomes):
            raise _LostHold(sweep.id)
        self._untold.setdefault(sweep.id, []).extend(untold)
        self._ended.setdefault(sweep.id, set()).update(number for number, _, _ in outcomes)
        for t, (_, status, values) in zip(ended, outcomes, strict=True):  # as stored now
            t.trial.status, t.trial.value, t.trial.error = status, values["value"], \
                values["error"]
        return {number: status for number, status, _ in outcomes}

    def _outcome(self, sweep: SweepRow, study: SweepStudy, t: TrialState
                 ) -> tuple[str, dict[str, Any]]:
        """A trial whose job ended: its state, and what the trial row records of it."""
        tr = t.trial
        intermediate = dict(tr.intermediate)
        value: float | None = None
        error: dict[str, Any] | None = None
        pruned_at = tr.pruned_at
        if t.job_status != "failed" and tr.prune_requested:
            status = "pruned"
        elif t.job_status == "succeeded" and (pruned_at := self._judge_history(
                sweep, study, t, intermediate)) is not None:
            status = "pruned"
        else:
            status, value, error = trial_end(sweep.objective, t.job_status, t.metrics,
                                             t.job_error)
        return status, {"value": value, "intermediate": intermediate, "pruned_at": pruned_at,
                        "error": error}

    def _judge_history(self, sweep: SweepRow, study: SweepStudy, t: TrialState,
                       intermediate: dict[str, Any]) -> int | None:
        """Report the trial's loss at each rung it passed and had not reported (from its
        history); the rung at which the pruner stops it, if it does."""
        points = rungs(sweep.pruning, t.epochs)
        done = max((int(k) for k in intermediate), default=0)
        points = [r for r in points if r > done]
        if not points or t.trial.job_id is None:
            return None
        epochs, loss, val = self.store.history(t.trial.job_id)
        series = self._series(sweep, loss, val)
        for r in points:
            i = int(np.searchsorted(epochs, r))
            if i >= len(epochs):
                break
            value = self._signed(sweep, float(series[i]))
            intermediate[str(r)] = value
            if study.report(t.number, r, value):
                return r
        return None

    def _check_rungs(self, sweep: SweepRow, study: SweepStudy, t: TrialState) -> None:
        """A running trial past a rung reports its latest loss there (the loss of the epoch
        it has reached: at or after the rung); a pruned one has its job cancelled."""
        latest = self._series(sweep, t.progress_loss, t.progress_val_loss)
        if latest is None:
            return
        tr = t.trial
        intermediate = dict(tr.intermediate)
        done = max((int(k) for k in intermediate), default=0)
        due = [r for r in rungs(sweep.pruning, t.epochs) if done < r <= t.progress_epoch]
        if not due:
            return
        pruned_at = None
        for r in due:
            value = self._signed(sweep, float(latest))
            intermediate[str(r)] = value
            if study.report(t.number, r, value):
                pruned_at = r
                break
        if not self.store.update_trial(sweep.id, tr.number, self.name,
                                       intermediate=intermediate,
                                       system_attrs=study.system_attrs(tr.number),
                                       prune_requested=pruned_at is not None,
                                       pruned_at=pruned_at):
            raise _LostHold(sweep.id)
        if pruned_at is not None and tr.job_id is not None:
            log.info("sweep %s: trial %d pruned at epoch %d", sweep.id, tr.number, pruned_at)
            try:
                self.services.meta.request_cancel(tr.job_id, sweep.tenant)
            except Conflict:
                pass  # it ended meanwhile: recorded as pruned all the same

    def _cancel_trials(self, sweep: SweepRow) -> None:
        for job_id in self.store.active_trial_jobs(sweep.id):
            try:
                self.services.meta.request_cancel(job_id, sweep.tenant)
            except (Conflict, NotFound):
                continue
            self.services.waiters.finished(job_id)

    # ------------------------------------------------------------ the end

    def _finish(self, sweep: SweepRow) -> None:
        """Every trial ended: the sweep ends with its best trial, its model registered under
        the sweep's ``model_name`` (``SweepRecords.end_with_best``, as a worker ends a sweep
        whose last trials its batch ended)."""
        ended = self.store.end_sweep(sweep.id, self.name)
        if ended is None:
            raise _LostHold(sweep.id)
        if ended["registered"]:
            self.services.catalog_moved()  # predict re-resolves the name
        self._forget(sweep.id)
        self._held.discard(sweep.id)
        self.services.waiters.finished(sweep.id)  # its long polls answer now
        log.info("sweep %s %s", sweep.id, ended["status"])

    def _end(self, sweep: SweepRow, status: str, **values: Any) -> None:
        if not self.store.finish_sweep(sweep.id, self.name, status, **values):
            raise _LostHold(sweep.id)
        self._forget(sweep.id)
        self._held.discard(sweep.id)
        self.services.waiters.finished(sweep.id)  # its long polls answer now
        log.info("sweep %s %s", sweep.id, status)
