"""Sweep records: a sweep, its trials (each names the job that runs it), and the hold of the
controller that advances it. Like a job's claim, the hold is one conditional UPDATE with a
heartbeat: a sweep is advanced by one controller at a time, and one whose controller fell
silent is taken over by another.

The records share the metadata store's engine and sessions (``SweepRecords(meta)``)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, load_only

from service.errors import ActiveJobsExceeded, Conflict, not_found
from service.jobs.status import ACTIVE, FINISHED
from service.store.jobs import active_jobs
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
        """Whether ``holder`` holds the sweep (read in the caller's transaction)."""
        return s.scalar(select(SweepRow.holder).where(SweepRow.id == sweep_id)) == holder

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
        with self.session() as s:
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
                                                          dict[str, Any]]]) -> set[str]:
        """Record the ends of a batch of trials this worker trained together, in one
        transaction: ``(job id, model, values)`` each, a succeeded trial with its model (the
        row ``finish_with_model`` creates, unnamed) and its job's values, or one that ended
        otherwise with its status and error (``finish_job``'s values). Only jobs this worker
        still holds change; returns their ids."""
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
        return held

    def sweep_of_job(self, job_id: str) -> str | None:
        with self.session() as s:
            return s.scalar(select(SweepTrialRow.sweep_id)
                            .where(SweepTrialRow.job_id == job_id))

    # ------------------------------------------------------------ the winner

    def register_model(self, model_id: str, tenant: str, name: str) -> ModelRow | None:
        """Give a trial's model ``name`` as its next version (None when it was deleted)."""
        for attempt in range(10):
            try:
                with self.write_session() as s:
                    row = s.get(ModelRow, model_id, with_for_update=True)
                    if row is None or row.tenant != tenant:
                        return None
                    if row.name == name:
                        return row  # registered already (a retried end)
                    if self.records.engine.dialect.name == "postgresql":
                        s.execute(select(func.pg_advisory_xact_lock(func.hashtext(
                            f"fitserve-model:{tenant}:{name}"))))
                    latest = s.scalar(select(func.max(ModelRow.version)).where(
                        ModelRow.tenant == tenant, ModelRow.name == name))
                    row.name = name
                    row.version = (latest or 0) + 1
                return row
            except IntegrityError:  # a version taken at the same time: the next number
                time.sleep(random.uniform(0, 0.005 * (attempt + 1)))
        raise RuntimeError(f"could not allocate a version of {name!r} for model {model_id}")


def _next_seq(s: Session, sweep_id: str) -> int:
    return (s.scalar(select(func.max(SweepTrialRow.seq))
                     .where(SweepTrialRow.sweep_id == sweep_id)) or 0) + 1
