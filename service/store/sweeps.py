"""Sweep records: a sweep, its trials (each names the job that runs it), and the hold of the
controller that advances it. Like a job's claim, the hold is one conditional UPDATE with a
heartbeat: a sweep is advanced by one controller at a time, and one whose controller fell
silent is taken over by another.

The records share the metadata store's engine and sessions (``SweepRecords(meta)``)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.orm import Session, load_only

from service.errors import ActiveJobsExceeded, Conflict, not_found
from service.jobs.status import ACTIVE, FINISHED
from service.store.jobs import active_jobs
from service.store.names import next_version
from service.store.session import Page, Records, updated_rows
from service.store.tables import (
    DatasetRow,
    JobRow,
    ModelRow,
    SweepRow,
    SweepTrialRow,
    new_id,
    utcnow,
)

OPEN = "open"
"""A trial whose job is queued or running (its own status is the job's)."""


@dataclass
class TrialState:
    """A trial with what its job says of it now (no history: see ``history``)."""

    trial: SweepTrialRow
    job_status: str
    epochs: int  # the epochs the job was asked for
    progress_epoch: int
    progress_loss: float | None
    progress_val_loss: float | None
    engine_used: str | None
    model_id: str | None
    job_error: dict[str, Any] | None
    metrics: dict[str, Any] | None  # its model's, once it has one

    @property
    def number(self) -> int:
        return self.trial.number


@dataclass
class NewTrial:
    """A trial to queue: its number, its job's hyperparameters, and what the study asked."""

    number: int
    spec: dict[str, Any]
    epochs: int
    params: dict[str, Any]
    raw_params: dict[str, Any]
    system_attrs: dict[str, Any]


@dataclass
class BatchEnd:
    """What ``finish_batch`` recorded: the jobs this worker still held (their ends written),
    those of them whose trials were recorded in a sweep that has no trial left to ask for
    (its controller has nothing to do for them), and the sweeps whose last trials those
    were (ended with their best trial)."""

    held: set[str]
    settled: set[str]
    sweeps_ended: list[dict[str, Any]]


def trial_end(objective: str, job_status: str, metrics: dict[str, Any] | None,
              job_error: dict[str, Any] | None) -> tuple[str, float | None, dict[str, Any] | None]:
    """How a trial whose job ended comes out when no pruner judges it: (its status, its
    objective value, its error). A succeeded job's value is read from its model's metrics,
    and a model without a finite one makes a failed trial; a failed or cancelled job's trial
    ends as its job did, with its error."""
    if job_status in ("failed", "cancelled"):
        return job_status, None, job_error
    raw = (metrics or {}).get(objective)
    value = None if raw is None else float(raw)
    if value is None or not math.isfinite(value):
        return "failed", None, {"type": "no_objective",
                                "message": f"the trial's model has no finite {objective}"}
    return "succeeded", value, None


_JOB_COLUMNS = (JobRow.id, JobRow.status, JobRow.epochs, JobRow.progress_epoch,
                JobRow.progress_loss, JobRow.progress_val_loss, JobRow.engine_used,
                JobRow.model_id, JobRow.error)


class SweepRecords:
    def __init__(self, records: Records) -> None:
        self.records = records
        self.session = records.session
        self.write_session = records.write_session

    # ------------------------------------------------------------ the sweep

    def create_sweep(self, *, then: Callable[[Session, str], None] | None = None,
                     **values: Any) -> SweepRow:
        """Insert a queued sweep; ``then(session, sweep_id)`` commits with it (the
        completion of its Idempotency-Key)."""
        row = SweepRow(id=new_id("swp"), status="queued", created_at=utcnow(),
                       cancel_requested=False, **values)
        with self.session() as s:
            s.add(row)
            if then is not None:
                s.flush()
                then(s, row.id)
        return row

    def get_sweep(self, sweep_id: str, tenant: str | None = "default") -> SweepRow:
        with self.session() as s:
            row = s.get(SweepRow, sweep_id)
        if row is None or (tenant is not None and row.tenant != tenant):
            raise not_found("sweep", sweep_id)
        return row

    def list_sweeps(self, tenant: str, status: str | None, limit: int,
                    cursor: str | None) -> Page:
        filters = [SweepRow.tenant == tenant]
        if status:
            filters.append(SweepRow.status == status)
        return self.records._page(SweepRow, filters, limit, cursor)

    def request_cancel(self, sweep_id: str, tenant: str) -> SweepRow:
        """Flag the sweep; its controller cancels every trial still queued or running."""
        with self.session() as s:
            row = s.get(SweepRow, sweep_id)
            if row is None or row.tenant != tenant:
                raise not_found("sweep", sweep_id)
            if row.status in FINISHED:
                raise Conflict(f"sweep {sweep_id!r} has already {row.status}; nothing to "
                               "cancel")
            row.cancel_requested = True
        return row

    def finish_sweep(self, sweep_id: str, holder: str, status: str, **values: Any) -> bool:
        """Record the end of a sweep, only if this controller still holds it."""
        with self.session() as s:
            return updated_rows(s, update(SweepRow).where(
                SweepRow.id == sweep_id, SweepRow.holder == holder,
                SweepRow.status.in_(ACTIVE),
            ).values(status=status, finished_at=utcnow(), holder=None, **values)) == 1

    # ------------------------------------------------------------ holds

    def claim_sweeps(self, holder: str, stale_before: datetime,
                     fresh_after: datetime | None = None) -> list[str]:
        """Hold every active sweep that nobody holds, or whose holder last showed life before
        ``stale_before`` (refreshing this holder's own); returns the sweeps held now. With
        ``fresh_after``: when every active sweep is this holder's, refreshed since then, they
        are only read (no write, so no wait behind a worker's commit)."""
        if fresh_after is not None:
            with self.session() as s:
                active = s.execute(select(SweepRow.id, SweepRow.holder, SweepRow.heartbeat_at)
                                   .where(SweepRow.status.in_(ACTIVE))
                                   .order_by(SweepRow.id)).all()
            if all(h == holder and beat is not None and beat >= fresh_after
                   for _, h, beat in active):
                return [sweep_id for sweep_id, _, _ in active]
        with self.session() as s:
            s.execute(update(SweepRow).where(
                SweepRow.status.in_(ACTIVE),
                or_(SweepRow.holder.is_(None), SweepRow.holder == holder,
                    SweepRow.heartbeat_at < stale_before),
            ).values(holder=holder, heartbeat_at=utcnow()))
            return list(s.scalars(select(SweepRow.id).where(
                SweepRow.holder == holder, SweepRow.status.in_(ACTIVE)
            ).order_by(SweepRow.id)))

    def release_sweeps(self, holder: str | None = None) -> int:
        """Let go of the sweeps ``holder`` holds (every hold when None: the embedded server,
        the only controller on its store, starts so)."""
        with self.session() as s:
            q = update(SweepRow).where(SweepRow.status.in_(ACTIVE))
            if holder is not None:
                q = q.where(SweepRow.holder == holder)
            return updated_rows(s, q.values(holder=None, heartbeat_at=None))

    # ------------------------------------------------------------ trials

    def trial_row(self, sweep_id: str, number: int, job_id: str | None, params: dict[str, Any],
                  raw_params: dict[str, Any], system_attrs: dict[str, Any]) -> SweepTrialRow:
        """A new open trial (added in the transaction that creates its job)."""
        return SweepTrialRow(sweep_id=sweep_id, number=number, job_id=job_id, params=params,
                             raw_params=raw_params, status=OPEN, intermediate={},
                             system_attrs=system_attrs, prune_requested=False,
                             created_at=utcnow())

    def create_trials(self, sweep: SweepRow, holder: str, trials: Sequence[NewTrial],
                      max_active: int) -> list[str] | None:
        """Queue the trials' jobs and their trial rows in one transaction, checked as
        ``create_job`` checks one job: the sweep's dataset still there (NotFound) and the
        tenant's queued + running jobs within ``max_active`` (ActiveJobsExceeded), and the
        sweep still held by ``holder`` (else None, nothing stored); a queued sweep is
        running from then on. Returns the job ids."""
        now = utcnow()
        ids = [new_id("job") for _ in trials]
        jobs = [{"id": job_id, "status": "queued", "created_at": now,
                 "tenant": sweep.tenant, "dataset_id": sweep.dataset_id, "spec": t.spec,
                 "device": sweep.device, "model_name": None, "epochs": t.epochs}
                for job_id, t in zip(ids, trials, strict=True)]
        with self.write_session() as s:
            if self.records.engine.dialect.name == "postgresql":  # as create_job's
                s.execute(select(func.pg_advisory_xact_lock(func.hashtext(
                    f"fitserve-active:{sweep.tenant}"))))
            if not self.holds(s, sweep.id, holder):
                return None
            s.execute(insert(JobRow), jobs)  # one executemany each, not a flush of objects
            if s.scalar(select(DatasetRow.id).where(
                    DatasetRow.id == sweep.dataset_id, DatasetRow.tenant == sweep.tenant
            ).with_for_update(key_share=True)) is None:
                raise not_found("dataset", sweep.dataset_id)
            active = active_jobs(s, sweep.tenant)
            if active > max_active:
                raise ActiveJobsExceeded(active - len(jobs), max_active)
            s.execute(insert(SweepTrialRow), [
                {"sweep_id": sweep.id, "number": t.number, "job_id": job_id,
                 "params": t.params, "raw_params": t.raw_params, "status": OPEN,
                 "intermediate": {}, "system_attrs": t.system_attrs,
                 "prune_requested": False, "created_at": now}
                for t, job_id in zip(trials, ids, strict=True)])
            s.execute(update(SweepRow)
                      .where(SweepRow.id == sweep.id, SweepRow.status == "queued")
                      .values(status="running", started_at=now))
        return ids

    def trials(self, sweep_id: str) -> list[TrialState]:
        """Every trial of a sweep in number order, with its job's state and its model's
        metrics (one query)."""
        with self.session() as s:
            rows = s.execute(
                select(SweepTrialRow, *_JOB_COLUMNS, ModelRow.metrics)
                .join(JobRow, JobRow.id == SweepTrialRow.job_id, isouter=True)
                .join(ModelRow, ModelRow.id == JobRow.model_id, isouter=True)
                .where(SweepTrialRow.sweep_id == sweep_id)
                .order_by(SweepTrialRow.number)
            ).all()
        out = []
        for trial, job_id, status, epochs, epoch, loss, val, engine, model_id, error, metrics \
                in rows:
            if job_id is None:  # its job was deleted: what the trial recorded is all there is
                status, epochs, epoch = trial.status if trial.status != OPEN else "cancelled", \
                    0, 0
            out.append(TrialState(trial, status, epochs, epoch, loss, val, engine, model_id,
                                  error, metrics))
        return out

    def trial_counts(self, sweep_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        """Per sweep: trials by state (open ones by their job's status)."""
        if not sweep_ids:
            return {}
        with self.session() as s:
            rows = s.execute(
                select(SweepTrialRow.sweep_id, SweepTrialRow.status, JobRow.status, func.count())
                .join(JobRow, JobRow.id == SweepTrialRow.job_id, isouter=True)
                .where(SweepTrialRow.sweep_id.in_(list(sweep_ids)))
                .group_by(SweepTrialRow.sweep_id, SweepTrialRow.status, JobRow.status)
            ).all()
        counts: dict[str, dict[str, int]] = {i: {} for i in sweep_ids}
        for sweep_id, trial_status, job_status, n in rows:
            key = trial_status if trial_status != OPEN else (job_status or "cancelled")
            if trial_status == OPEN and job_status in FINISHED:
                key = "running"  # ended, not yet recorded by the controller
            counts[sweep_id][key] = counts[sweep_id].get(key, 0) + int(n)
        return counts

    def history(self, job_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """A job's loss history: (epochs, loss, val_loss) as stored."""
        with self.session() as s:
            row = s.scalar(select(JobRow).where(JobRow.id == job_id).options(load_only(
                JobRow.history_epoch, JobRow.history_loss, JobRow.history_val_loss)))
        if row is None or row.history_epoch is None or row.history_loss is None:
            return np.zeros(0, np.int32), np.zeros(0, np.float32), None
        val = (None if row.history_val_loss is None
               else np.frombuffer(row.history_val_loss, "<f4"))
        return (np.frombuffer(row.history_epoch, "<i4"), np.frombuffer(row.history_loss, "<f4"),
                val)

    @staticmethod
    def holds(s: Session, sweep_id: str, holder: str) -> bool:
        """Whether ``holder`` holds the sweep (read in the caller's transaction, the sweep's
        row locked to its end on PostgreSQL: its trials' ends are numbered by one
        transaction at a time, this controller's or a worker's ``finish_batch``)."""
        return s.scalar(select(SweepRow.holder).where(SweepRow.id == sweep_id)
                        .with_for_update()) == holder

    def update_trial(self, sweep_id: str, number: int, holder: str, **values: Any) -> bool:
        """Change a trial, only while this controller holds its sweep."""
        with self.session() as s:
            if not self.holds(s, sweep_id, holder):
                return False
            s.execute(update(SweepTrialRow).where(
                SweepTrialRow.sweep_id == sweep_id, SweepTrialRow.number == number
            ).values(**values))
        return True

    def end_trials(self, sweep_id: str, holder: str,
                   outcomes: Sequence[tuple[int, str, dict[str, Any]]]) -> bool:
        """Record how open trials ended (``(number, status, values)``, one transaction),
        numbering them in that order (the ids of their events); False when this controller
        no longer holds the sweep (nothing recorded)."""
        with self.write_session() as s:  # what is open is read, then written: no one between
            if not self.holds(s, sweep_id, holder):
                return False
            seq = _next_seq(s, sweep_id)
            now = utcnow()
            numbers = [number for number, _, _ in outcomes]
            open_rows = {number: row_id for number, row_id in s.execute(
                select(SweepTrialRow.number, SweepTrialRow.id).where(
                    SweepTrialRow.sweep_id == sweep_id, SweepTrialRow.status == OPEN,
                    SweepTrialRow.number.in_(numbers))).all()}
            rows = []
            for number, status, values in outcomes:
                if number in open_rows:
                    rows.append({"id": open_rows[number], "status": status, "seq": seq,
                                 "finished_at": now, **values})
                    seq += 1
            by_keys: dict[tuple[str, ...], list[dict[str, Any]]] = {}
            for row in rows:  # an executemany per set of columns (by primary key)
                by_keys.setdefault(tuple(sorted(row)), []).append(row)
            for same in by_keys.values():
                s.execute(update(SweepTrialRow), same)
        return True

    def add_refused_trial(self, sweep_id: str, number: int, holder: str,
                          params: dict[str, Any], raw_params: dict[str, Any],
                          system_attrs: dict[str, Any], error: dict[str, Any]) -> int | None:
        """A trial the job schema refused (a combination of values): failed, without a
        job; returns its place in the order trials ended (None: the sweep is not held)."""
        with self.write_session() as s:
            if not self.holds(s, sweep_id, holder):
                return None
            seq = _next_seq(s, sweep_id)
            row = self.trial_row(sweep_id, number, None, params, raw_params, system_attrs)
            row.status, row.seq, row.error, row.finished_at = "failed", seq, error, utcnow()
            s.add(row)
        return seq

    def active_trial_jobs(self, sweep_id: str) -> list[str]:
        with self.session() as s:
            return list(s.scalars(
                select(JobRow.id).join(SweepTrialRow, SweepTrialRow.job_id == JobRow.id)
                .where(SweepTrialRow.sweep_id == sweep_id, JobRow.status.in_(ACTIVE))))

    def trial_siblings(self, job_id: str, limit: int
                       ) -> tuple[list[tuple[str, str, str, dict[str, Any]]], int, int]:
        """The other trials of the sweep this job is a trial of, as a batch's claim needs
        them (one read): the queued ones oldest first, as (job id, dataset id, device,
        spec); how many run; and how many more its controller may queue now (within
        ``max_trials`` and ``max_parallel``: a sweep's trials are queued in parts). None of
        them when the job is no trial."""
        with self.session() as s:
            sweep = s.execute(
                select(SweepRow.id, SweepRow.max_trials, SweepRow.max_parallel)
                .join(SweepTrialRow, SweepTrialRow.sweep_id == SweepRow.id)
                .where(SweepTrialRow.job_id == job_id)).first()
            if sweep is None:
                return [], 0, 0
            sweep_id, max_trials, max_parallel = sweep
            trial = (select(JobRow.id, JobRow.dataset_id, JobRow.device, JobRow.spec)
                     .join(SweepTrialRow, SweepTrialRow.job_id == JobRow.id)
                     .where(SweepTrialRow.sweep_id == sweep_id, JobRow.id != job_id))
            queued = s.execute(trial.where(JobRow.status == "queued")
                               .order_by(JobRow.created_at, JobRow.id).limit(limit)).all()
            counts = dict(s.execute(
                select(SweepTrialRow.status, func.count()).where(
                    SweepTrialRow.sweep_id == sweep_id).group_by(SweepTrialRow.status)).all())
            running = s.scalar(select(func.count()).select_from(
                trial.where(JobRow.status == "running").subquery())) or 0
        created, still_open = sum(counts.values()), counts.get(OPEN, 0)
        to_come = max(0, min(max_trials - created, max_parallel - still_open))
        return [(i, d, dev, spec) for i, d, dev, spec in queued], int(running), to_come

    def batch_progress(self, worker: str, progress: Sequence[tuple[str, int, float,
                                                                float | None]],
                       waiting: Sequence[str] = ()) -> set[str]:
        """One write for a batch of trials a worker trains together: each trial's progress
        (job id, epoch, loss, val loss) and heartbeat, and the heartbeat of the batch's
        jobs that wait their turn (``waiting``); returns the ids of those asked to stop."""
        ids = [p[0] for p in progress]
        now = utcnow()
        with self.session() as s:
            for job_id, epoch, loss, val_loss in progress:
                s.execute(update(JobRow).where(JobRow.id == job_id, JobRow.worker == worker)
                          .values(progress_epoch=epoch, progress_loss=loss,
                                  progress_val_loss=val_loss, heartbeat_at=now))
            if waiting:
                s.execute(update(JobRow).where(JobRow.id.in_(list(waiting)),
                                               JobRow.status == "running",
                                               JobRow.worker == worker)
                          .values(heartbeat_at=now))
            return set(s.scalars(select(JobRow.id).where(
                JobRow.id.in_(ids), or_(JobRow.cancel_requested.is_(True),
                                        JobRow.status != "running", JobRow.worker.is_(None),
                                        JobRow.worker != worker))))

    def finish_batch(self, worker: str, ends: Sequence[tuple[str, dict[str, Any] | None,
                                                          dict[str, Any]]]) -> BatchEnd:
        """Record the ends of a batch of trials this worker trained together, in one
        transaction: ``(job id, model, values)`` each, a succeeded trial with its model (the
        row ``finish_with_model`` creates, unnamed) and its job's values, or one that ended
        otherwise with its status and error (``finish_job``'s values). Only jobs this worker
        still holds change. In the same transaction their trials are recorded as ended
        where no pruner judges them (``record_trial_ends``), and a sweep whose last open
        trial that was ends with its best trial (``end_with_best``)."""
        if any(model is not None and model.get("name") for _, model, _ in ends):
            raise ValueError("a batch's models are unnamed (trials register no name)")
        ids = [job_id for job_id, _, _ in ends]
        with self.write_session() as s:
            # locked: a reaper cannot take a job between this check and the commit
            held = set(s.scalars(select(JobRow.id).where(
                JobRow.id.in_(ids), JobRow.status == "running", JobRow.worker == worker,
            ).with_for_update()))
            now = utcnow()
            models = [{"version": None, "created_at": now, **model}
                      for job_id, model, _ in ends if model is not None and job_id in held]
            if models:
                s.execute(insert(ModelRow), models)
            by_keys: dict[tuple[str, ...], list[dict[str, Any]]] = {}
            for job_id, model, values in ends:
                if job_id not in held:
                    continue
                row = {"id": job_id, "finished_at": now, **values}
                if model is not None:
                    row.update(status="succeeded", model_id=model["id"])
                by_keys.setdefault(tuple(sorted(row)), []).append(row)
            for rows in by_keys.values():  # an executemany per set of columns
                s.execute(update(JobRow), rows)
            settled, ended = self.record_trial_ends(s, {
                job_id: ("succeeded", model["metrics"], None) if model is not None
                else (str(values.get("status")), None, values.get("error"))
                for job_id, model, values in ends if job_id in held}, now)
        return BatchEnd(held, settled, ended)

    def record_trial_ends(self, s: Session,
                          jobs: dict[str, tuple[str, dict[str, Any] | None,
                                                dict[str, Any] | None]],
                          now: datetime) -> tuple[set[str], list[dict[str, Any]]]:
        """In the transaction that ends these jobs (job id: its status, its model's metrics,
        its error): their trials, still open, recorded as ended (``trial_end``) and numbered
        in the order trials ended, after the sweep's row is locked, as the controller's
        ``end_trials`` numbers them; a sweep whose trials have now all been created and
        ended, and whose cancel nobody asked, ends with its best trial (``end_with_best``).
        A sweep with a pruner is left to its controller, which judges each trial's history
        first. Returns the jobs whose trials were recorded in a sweep with every trial
        created and no cancel asked (nothing left for its controller to do for them), and
        the sweeps ended (``end_with_best``'s answers)."""
        settled: set[str] = set()
        ended: list[dict[str, Any]] = []
        if not jobs:
            return settled, ended
        sweep_ids = sorted(set(s.scalars(select(SweepTrialRow.sweep_id).where(
            SweepTrialRow.job_id.in_(list(jobs)), SweepTrialRow.status == OPEN))))
        for sweep_id in sweep_ids:
            sweep = s.scalar(select(SweepRow).where(SweepRow.id == sweep_id).with_for_update())
            if sweep is None or sweep.pruning or sweep.status not in ACTIVE:
                continue
            trials = s.execute(select(SweepTrialRow.id, SweepTrialRow.job_id).where(
                SweepTrialRow.sweep_id == sweep_id, SweepTrialRow.status == OPEN,
                SweepTrialRow.job_id.in_(list(jobs))).order_by(SweepTrialRow.number)).all()
            seq = _next_seq(s, sweep_id)
            rows = []
            for row_id, job_id in trials:
                status, value, error = trial_end(sweep.objective, *jobs[str(job_id)])
                rows.append({"id": row_id, "status": status, "value": value, "error": error,
                             "seq": seq, "finished_at": now})
                seq += 1
            if rows:
                s.execute(update(SweepTrialRow), rows)
            if sweep.cancel_requested:
                continue
            counts = dict(s.execute(
                select(SweepTrialRow.status, func.count())
                .where(SweepTrialRow.sweep_id == sweep_id)
                .group_by(SweepTrialRow.status)).all())
            if sum(counts.values()) >= sweep.max_trials:
                settled.update(str(job_id) for _, job_id in trials)
                if not counts.get(OPEN):
                    ended.append(self.end_with_best(s, sweep, now))
        return settled, ended

    def end_sweep(self, sweep_id: str, holder: str) -> dict[str, Any] | None:
        """End a sweep whose trials have all ended, as its holder (``end_with_best``); None
        when ``holder`` no longer holds it (nothing changed)."""
        with self.write_session() as s:
            sweep = s.scalar(select(SweepRow).where(SweepRow.id == sweep_id).with_for_update())
            if sweep is None or sweep.holder != holder or sweep.status not in ACTIVE:
                return None
            return self.end_with_best(s, sweep, utcnow())

    def end_with_best(self, s: Session, sweep: SweepRow, now: datetime) -> dict[str, Any]:
        """In the caller's transaction (the sweep's row locked): the sweep succeeds with its
        best succeeded trial whose model is still there (the lowest number on a tie), that
        model registered as the next version of the sweep's ``model_name`` if it has one;
        with none, the sweep fails saying why. Returns what changed: the sweep's id, status,
        and the model registered (None: no name was given, or no trial succeeded)."""
        best_first = (SweepTrialRow.value.desc() if sweep.direction == "maximize"
                      else SweepTrialRow.value.asc())
        best = s.execute(
            select(SweepTrialRow.number, SweepTrialRow.value, ModelRow)
            .join(JobRow, JobRow.id == SweepTrialRow.job_id)
            .join(ModelRow, ModelRow.id == JobRow.model_id)
            .where(SweepTrialRow.sweep_id == sweep.id, SweepTrialRow.status == "succeeded",
                   SweepTrialRow.value.is_not(None), ModelRow.tenant == sweep.tenant)
            .order_by(best_first, SweepTrialRow.number).limit(1)).first()
        sweep.finished_at, sweep.holder = now, None
        if best is None:
            errors = s.execute(select(SweepTrialRow.error).where(
                SweepTrialRow.sweep_id == sweep.id).order_by(SweepTrialRow.number)).scalars()
            trials = list(errors)
            first = next((e for e in trials if e), None)
            why = f"; trial errors, e.g. {first['type']}: {first['message']}" if first else ""
            sweep.status = "failed"
            sweep.error = {"type": "no_trial_succeeded",
                           "message": f"none of the {len(trials)} trials succeeded{why}"}
            return {"sweep_id": sweep.id, "status": "failed", "registered": None}
        number, value, model = best
        registered = None
        if sweep.model_name and model.name != sweep.model_name:  # (already: a retried end)
            model.name, model.version = sweep.model_name, next_version(
                s, sweep.tenant, sweep.model_name)
            registered = model.id
        sweep.status, sweep.best_trial, sweep.best_value, sweep.model_id = \
            "succeeded", number, value, model.id
        return {"sweep_id": sweep.id, "status": "succeeded", "registered": registered}

    def sweep_of_job(self, job_id: str) -> str | None:
        with self.session() as s:
            return s.scalar(select(SweepTrialRow.sweep_id)
                            .where(SweepTrialRow.job_id == job_id))


def _next_seq(s: Session, sweep_id: str) -> int:
    return (s.scalar(select(func.max(SweepTrialRow.seq))
                     .where(SweepTrialRow.sweep_id == sweep_id)) or 0) + 1
