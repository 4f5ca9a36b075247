"""Job records: the queue's truth. Claims, heartbeats, progress, ends and recovery are each
one conditional UPDATE, so two workers never both hold a job and a finished job never
changes again."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import case, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.errors import ActiveJobsExceeded, Conflict, NotFound, not_found
from service.jobs.status import ACTIVE, FINISHED
from service.store.names import next_version
from service.store.session import Page, Records, updated_rows
from service.store.tables import DatasetRow, JobRow, ModelRow, SweepTrialRow, new_id, utcnow

log = logging.getLogger(__name__)

TRAIN = "train"
PREDICT = "predict"
"""A job's ``task``: training (POST /v1/jobs) or a batch prediction (POST /v1/predictions).
The methods a tenant's request reaches take the task it deals in (None: any), so a route of
one kind never sees a job of the other; the queue's own (claim, heartbeat, recovery) serve
both alike."""


def _claim_values(worker: str) -> dict[str, Any]:
    now = utcnow()
    return {"status": "running", "worker": worker, "started_at": now, "heartbeat_at": now,
            "attempts": JobRow.attempts + 1}


def _recover(job: JobRow, max_attempts: int) -> bool:
    """A job whose worker is gone: cancelled if that was asked, failed once it used up its
    attempts, else queued again (returns True then)."""
    if job.cancel_requested:
        job.status = "cancelled"
        job.error = {"type": "cancelled", "message": "cancelled"}
        job.finished_at = utcnow()
        return False
    if job.attempts >= max_attempts:
        job.status = "failed"
        job.error = {
            "type": "worker_lost",
            "message": f"the worker running this job died {job.attempts} time(s); giving up",
        }
        job.finished_at = utcnow()
        return False
    job.status = "queued"
    job.worker = None
    job.heartbeat_at = None
    job.progress_epoch = 0
    job.progress_loss = None
    job.progress_val_loss = None
    return True



def active_jobs(s: Session, tenant: str) -> int:
    """The tenant's queued and running jobs (the ``max_active_jobs`` limit counts them at
    every submit, inside its write transaction): read from the (tenant, status) index."""
    return s.scalar(select(func.count()).select_from(JobRow).where(
        JobRow.tenant == tenant, JobRow.status.in_(ACTIVE))) or 0

class JobRecords(Records):

    def create_job(
        self, *, max_active: int | None = None, check_dataset: bool = False,
        check_model: tuple[str, str] | None = None,
        then: Callable[[Session, str], None] | None = None, **values: Any,
    ) -> JobRow:
        """Insert a queued job, in one transaction with:

        - with ``check_dataset`` (submit sets it), the check that its dataset (``dataset_id``
          of ``tenant``) still exists: NotFound (a 404) when it is gone, nothing stored. The
          insert comes first, so on SQLite the write lock is held before the check reads (a
          concurrent delete waits; a transaction that read first could not upgrade); on
          PostgreSQL the dataset row is locked FOR KEY SHARE, which ``delete_dataset``'s
          DELETE waits for (and a check made after that DELETE commits finds no row).
        - with ``check_model`` (the model's id and the field that names it: a batch
          prediction's model, a warm start's parent), the same check of that model of
          ``tenant``: NotFound naming the field, nothing stored; ``delete_model`` refuses
          (409) while a queued job needs the model, and this closes the gap before.
        - with ``max_active``, the count of the tenant's queued + running jobs after the
          insert (SQLite's write lock, or an advisory lock on PostgreSQL, keeps concurrent
          submits apart): over the limit it rolls back and raises ActiveJobsExceeded.
        - ``then(session, job_id)``, last: what else must commit with the job (the
          completion of its Idempotency-Key)."""
        row = JobRow(id=new_id("job"), status="queued", created_at=utcnow(), **values)
        with self.session() as s:
            if max_active is not None and self.engine.dialect.name == "postgresql":
                s.execute(select(func.pg_advisory_xact_lock(func.hashtext(
                    f"fitserve-active:{row.tenant}"))))
            s.add(row)
            s.flush()
            if check_dataset and s.scalar(
                select(DatasetRow.id)
                .where(DatasetRow.id == row.dataset_id, DatasetRow.tenant == row.tenant)
                .with_for_update(key_share=True)
            ) is None:
                raise not_found("dataset", row.dataset_id)
            if check_model is not None:
                model_id, field = check_model
                if s.scalar(select(ModelRow.id)
                            .where(ModelRow.id == model_id, ModelRow.tenant == row.tenant)
                            .with_for_update(key_share=True)) is None:
                    raise NotFound(f"model {model_id!r} was deleted", field=field)
            if max_active is not None:
                active = active_jobs(s, row.tenant)
                if active > max_active:
                    raise ActiveJobsExceeded(active - 1, max_active)
            if then is not None:
                then(s, row.id)
        return row

    def get_job(self, job_id: str, tenant: str | None = "default",
                task: str | None = TRAIN) -> JobRow:
        """A job of ``tenant`` (None: any) and ``task`` (None: either); 404 otherwise."""
        with self.session() as s:
            row = s.get(JobRow, job_id)
        if row is None or (tenant is not None and row.tenant != tenant) or (
                task is not None and row.task != task):
            raise not_found("prediction" if task == PREDICT else "job", job_id)
        return row

    def list_jobs(
        self, tenant: str, status: str | None, limit: int, cursor: str | None,
        sweep: str | None = None, task: str = TRAIN,
    ) -> Page:
        """Newest first; ``sweep``: only the trials of that sweep."""
        filters = [JobRow.tenant == tenant, JobRow.task == task]
        if status:
            filters.append(JobRow.status == status)
        if sweep:
            filters.append(JobRow.id.in_(
                select(SweepTrialRow.job_id).where(SweepTrialRow.sweep_id == sweep)))
        return self._page(JobRow, filters, limit, cursor)

    def request_cancel(self, job_id: str, tenant: str = "default", task: str = TRAIN
                       ) -> JobRow:
        """A queued job is cancelled at once; a running one is flagged for its worker."""
        with self.write_session() as s:
            row = s.get(JobRow, job_id)
            if row is None or row.tenant != tenant or row.task != task:
                raise not_found("prediction" if task == PREDICT else "job", job_id)
            if row.status in FINISHED:
                raise Conflict(f"job {job_id!r} has already {row.status}; nothing to cancel")
            row.cancel_requested = True
            if row.status == "queued":
                row.status = "cancelled"
                row.finished_at = utcnow()
                row.error = {"type": "cancelled", "message": "cancelled before it started"}
        return row

    def delete_job(self, job_id: str, tenant: str = "default", task: str = TRAIN) -> JobRow:
        """Delete a job that has ended, its loss history with it (one row); returns it. A
        queued or running job is a 409 saying to cancel it first. The model it produced is
        not touched (a model is deleted on its own).

        The DELETE is conditional on the status, so a job a worker is about to claim or end
        is never deleted under it: it either ended before the DELETE or is still active."""
        retried = False
        while True:
            with self.session() as s:
                row = s.scalars(
                    delete(JobRow)
                    .where(JobRow.id == job_id, JobRow.tenant == tenant,
                           JobRow.task == task, JobRow.status.in_(FINISHED))
                    .returning(JobRow)
                ).one_or_none()
                if row is not None:
                    return row
                active = s.get(JobRow, job_id)
            if active is None or active.tenant != tenant or active.task != task:
                raise not_found("prediction" if task == PREDICT else "job", job_id)
            if active.status in FINISHED and not retried:  # it ended since the DELETE
                retried = True
                continue
            break
        if active.cancel_requested:
            raise Conflict(f"job {job_id!r} is being cancelled (it stops within about a "
                           "second); delete it once it has ended")
        route = "predictions" if task == PREDICT else "jobs"
        raise Conflict(f"job {job_id!r} is {active.status}; cancel it first "
                       f"(POST /v1/{route}/{job_id}/cancel), then delete it")

    def claim_next(self, worker: str) -> JobRow | None:
        """Atomically move the oldest queued job to running for this worker. A look without
        the write lock first (an idle worker asks every second and mostly finds nothing);
        then the claim in one write transaction that returns the row: on SQLite under
        ``write_session``'s lock, taken by retrying every 0.1 to 2 ms rather than by SQLite's
        own wait, which slept 1, 2, 5, ... ms whenever the workers claimed at once (as at a
        sweep's start)."""
        queued = select(JobRow.id).where(JobRow.status == "queued").order_by(
            JobRow.created_at, JobRow.id).limit(1)
        with self.session() as s:
            if s.scalar(queued) is None:
                return None
        while True:
            with self.write_session() as s:
                job_id = s.scalar(queued)
                if job_id is None:
                    return None
                job = s.scalars(
                    update(JobRow).where(JobRow.id == job_id, JobRow.status == "queued")
                    .values(**_claim_values(worker)).returning(JobRow)
                    .execution_options(synchronize_session=False)).one_or_none()
            if job is not None:
                return job
            # another worker won this one (PostgreSQL: no lock between the two): the next

    def claim(self, job_id: str, worker: str) -> JobRow | None:
        """Atomically move this job from queued to running for this worker; None when it is
        not queued (running elsewhere, finished, cancelled): a duplicate delivery."""
        with self.session() as s:
            claimed = updated_rows(
                s,
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.status == "queued")
                .values(**_claim_values(worker)),
            )
        return self.get_job(job_id, tenant=None, task=None) if claimed == 1 else None

    def claim_batch(self, job_ids: Sequence[str], worker: str, most: int | None = None
                    ) -> list[JobRow]:
        """Atomically move those of these jobs that are still queued to running for this
        worker (a sweep's trials trained as one batch); returns them, in the order given.
        With ``most``: only the oldest ``most`` of those still queued, chosen in the
        transaction that claims them, so that workers claiming from the same list at once
        each get their count (one passes over what another took, rather than coming back
        short; on PostgreSQL, rows another claim has locked are skipped, not waited for)."""
        if not job_ids or (most is not None and most <= 0):
            return []
        ids = list(job_ids)
        with self.write_session() as s:
            if most is not None:  # SQLite: under its write lock; PostgreSQL: rows locked
                ids = list(s.scalars(
                    select(JobRow.id).where(JobRow.id.in_(ids), JobRow.status == "queued")
                    .order_by(JobRow.created_at, JobRow.id).limit(most)
                    .with_for_update(skip_locked=True)))
            claimed = list(s.scalars(  # the rows as claimed, in the same statement
                update(JobRow).where(JobRow.id.in_(ids), JobRow.status == "queued")
                .values(**_claim_values(worker)).returning(JobRow)
                .execution_options(synchronize_session=False))) if ids else []
        order = {job_id: i for i, job_id in enumerate(job_ids)}
        return sorted(claimed, key=lambda j: order[j.id])

    def heartbeat(self, job_id: str, worker: str) -> bool:
        """The holder is alive; returns whether it still holds the job."""
        with self.session() as s:
            return updated_rows(
                s,
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.status == "running", JobRow.worker == worker)
                .values(heartbeat_at=utcnow()),
            ) == 1

    def requeue_stale(self, cutoff: datetime, max_attempts: int) -> list[JobRow]:
        """Running jobs whose holder last showed life before ``cutoff`` are recovered as
        ``requeue_running`` does; returns those put back in the queue. Safe to run in many
        processes at once: each row is re-checked under a row lock before it changes."""
        last_seen = func.coalesce(JobRow.heartbeat_at, JobRow.started_at)
        with self.session() as s:
            candidates = s.execute(
                select(JobRow.id, JobRow.worker).where(
                    JobRow.status == "running", last_seen < cutoff)
            ).all()
        requeued = []
        for job_id, holder in candidates:
            with self.write_session() as s:
                job = s.scalar(
                    select(JobRow)
                    .where(JobRow.id == job_id, JobRow.status == "running",
                           JobRow.worker == holder, last_seen < cutoff)
                    .with_for_update()
                )
                if job is None:  # it showed life, finished, or another reaper took it
                    continue
                log.warning("job %s: worker %s silent since %s; recovering it", job.id,
                            holder, job.heartbeat_at)
                if _recover(job, max_attempts):
                    requeued.append(job)
        return requeued

    def queued_jobs(self, created_before: datetime, limit: int = 1000) -> list[JobRow]:
        """Queued jobs older than ``created_before``, oldest first."""
        with self.session() as s:
            return list(s.scalars(
                select(JobRow)
                .where(JobRow.status == "queued", JobRow.created_at < created_before)
                .order_by(JobRow.created_at, JobRow.id)
                .limit(limit)
            ))

    def update_progress(
        self, job_id: str, epoch: int, loss: float | None, val_loss: float | None
    ) -> bool:
        """Write progress; returns whether cancellation was requested."""
        with self.session() as s:
            s.execute(
                update(JobRow)
                .where(JobRow.id == job_id)
                .values(progress_epoch=epoch, progress_loss=loss, progress_val_loss=val_loss,
                        heartbeat_at=utcnow())
            )
            return bool(s.scalar(select(JobRow.cancel_requested).where(JobRow.id == job_id)))

    def cancel_requested(self, job_id: str) -> bool:
        with self.session() as s:
            return bool(s.scalar(select(JobRow.cancel_requested).where(JobRow.id == job_id)))

    def finish_job(self, job_id: str, worker: str, **values: Any) -> bool:
        """Record the end of a job, only if this worker still holds it."""
        with self.session() as s:
            done = updated_rows(
                s,
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.status == "running", JobRow.worker == worker)
                .values(finished_at=utcnow(), **values),
            )
        return done == 1

    def finish_with_model(
        self, job_id: str, worker: str, model: dict[str, Any], job_values: dict[str, Any]
    ) -> ModelRow | None:
        """Create the model and mark the job succeeded in one transaction."""
        for attempt in range(10):
            try:
                with self.write_session() as s:
                    # locked: a reaper cannot take the job between this check and the commit
                    job = s.get(JobRow, job_id, with_for_update=True)
                    if job is None or job.status != "running" or job.worker != worker:
                        return None
                    version = (next_version(s, model["tenant"], model["name"])
                               if model.get("name") else None)
                    row = ModelRow(version=version, created_at=utcnow(), **model)
                    s.add(row)
                    s.flush()
                    for k, v in job_values.items():
                        setattr(job, k, v)
                    job.status = "succeeded"
                    job.model_id = row.id
                    job.finished_at = utcnow()
                return row
            except IntegrityError:  # two versions of one name at once: take the next number
                time.sleep(random.uniform(0, 0.005 * (attempt + 1)))  # spread the retries
                continue
        raise RuntimeError(f"could not allocate a model version for job {job_id}")

    def requeue_running(
        self, workers: Sequence[str] | None, max_attempts: int, *, refund: bool = False
    ) -> list[str]:
        """Jobs left running by dead workers (all running ones when ``workers`` is None) go
        back to the queue, or fail once they used up their attempts. ``refund``: the worker was
        stopped on purpose (a shutdown), so the attempt does not count."""
        touched = []
        with self.write_session() as s:
            q = select(JobRow).where(JobRow.status == "running")
            if workers is not None:
                q = q.where(JobRow.worker.in_(list(workers)))
            for job in s.scalars(q):
                touched.append(job.id)
                if refund:
                    job.attempts = max(0, job.attempts - 1)
                _recover(job, max_attempts)
        if touched:
            log.warning("recovered jobs from dead workers: %s", touched)
        return touched

    def count_active_jobs(self, tenant: str) -> int:
        with self.session() as s:
            return active_jobs(s, tenant)

    def job_stats(self) -> tuple[dict[str, int], int]:
        """Jobs per status, and the epochs they have run in all (one query, for /metrics;
        a prediction's progress counts rows, not epochs)."""
        epochs = case((JobRow.task == TRAIN, JobRow.progress_epoch), else_=0)
        with self.session() as s:
            rows = s.execute(
                select(JobRow.status, func.count(), func.coalesce(func.sum(epochs), 0))
                .group_by(JobRow.status)
            ).all()
        return {status: int(n) for status, n, _ in rows}, sum(int(e) for _, _, e in rows)
