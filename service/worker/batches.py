"""A sweep's trials claimed and trained as batches by one worker.

Two kinds of batch (see ``claim_trials``): the closed form's trials, computed together from
one pass of the sufficient statistics (runner.py's ``run_batch``), and the loop's trials of
one model shape, trained as one tensor program (training/batched.py). Each trial is still
its own job: prepared and ended by ``run_job`` exactly as it would be alone (its data, its
split and initial weights, its metrics, checkpoint and model); only the epochs in between
run in the batch. The trials' progress and heartbeats are written in one transaction per
interval, and a trial cancelled meanwhile (a pruned one) leaves the batch at the next chunk.
A closed-form batch also ends together (``run_closed_form``): its checkpoints made durable
with one sync, its trials' ends recorded in one transaction.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, cast

from sqlalchemy import select

from service.faults import pause_at
from service.store.artifacts import ArtifactStore
from service.store.metadata import MetadataStore
from service.store.sweeps import SweepRecords
from service.store.tables import DatasetRow, JobRow, ModelRow
from service.training import batched, closed_form
from service.training.epoch_loop import LoopCall
from service.training.spec import TrainingSpec
from service.worker.runner import (
    MAX_BATCH,
    Notify,
    _ReadOnce,
    claim_batch,
    run_batch,
    run_job,
)

log = logging.getLogger(__name__)


def trial_key(spec: TrainingSpec) -> str | None:
    """Trials with equal keys train together (None: alone)."""
    key = closed_form.batch_key(spec)
    return f"closed_form:{key}" if key is not None else batched.batch_key(spec)


def claim_trials(meta: MetadataStore, job: JobRow, worker: str, parts: int = 1
                 ) -> list[JobRow]:
    """``job`` (claimed) and the queued trials of its sweep that train with it as one
    batch (``trial_key``), claimed in one UPDATE (runner.py's ``claim_batch``). Workers
    that claim at the same moment each count the other's trials as still queued, and one
    of them gets less than its share (of 100 trials, 15 and 50, the rest left for later
    batches): it claims again, up to its share of what is open."""
    batch = claim_batch(meta, job, worker, parts, key_of=trial_key)
    # alone: not a trial (a job costs no more reads), or a trial that lost all its
    # siblings to the other worker's claim (its next claim takes some)
    if len(batch) == 1 or parts <= 1:
        return batch
    key = trial_key(TrainingSpec.model_validate(job.spec))
    records = SweepRecords(meta)
    for _ in range(2):
        mine = {j.id for j in batch}
        same = [j.id for j in records.queued_siblings(job.id, 4 * MAX_BATCH)
                if j.dataset_id == job.dataset_id and j.device == job.device
                and trial_key(TrainingSpec.model_validate(j.spec)) == key]
        if not same:
            break
        others = records.running_siblings(job.id) - (len(mine) - 1)  # running elsewhere
        share = min(MAX_BATCH, -(-(len(same) + len(mine) + others) // parts))
        if share <= len(batch):
            break
        batch += meta.claim_batch(same[: share - len(batch)], worker)
    return batch


def run_trials(jobs: list[JobRow], worker: str, meta: MetadataStore,
               artifacts: ArtifactStore, progress_interval: float = 0.2,
               notify: Notify | None = None) -> list[str]:
    """Train claimed trials (``claim_trials``) together; returns their final statuses."""
    if len(jobs) > 1 and closed_form.batch_key(TrainingSpec.model_validate(jobs[0].spec)):
        return run_closed_form(jobs, worker, meta, artifacts, progress_interval, notify)
    shared = cast(ArtifactStore, _ReadOnce(artifacts))
    statuses: dict[str, str] = {}
    taken: list[tuple[JobRow, LoopCall]] = []
    for job in jobs:  # each prepared as run_job prepares it, up to its epochs
        with batched.collecting() as box:
            try:
                statuses[job.id] = run_job(job, worker, meta, shared, progress_interval,
                                           notify)  # ended before its loop: alone
            except batched.Collected:
                assert box.call is not None
                taken.append((job, box.call))
    groups = batched.chunked([call for _, call in taken])
    for g, group in enumerate(groups):
        members = [taken[i] for i in group]
        waiting = [job.id for later in groups[g + 1:] for job, _ in (taken[i] for i in later)]
        statuses.update(_train_group(members, waiting, worker, meta, shared,
                                     progress_interval, notify))
    return [statuses[j.id] for j in jobs]


def _train_group(members: list[tuple[JobRow, LoopCall]], waiting: list[str], worker: str,
                 meta: MetadataStore, artifacts: ArtifactStore, progress_interval: float,
                 notify: Notify | None) -> dict[str, str]:
    jobs = [job for job, _ in members]
    statuses: dict[str, str] = {}
    if len(members) == 1:
        statuses[jobs[0].id] = run_job(jobs[0], worker, meta, artifacts, progress_interval,
                                       notify)
        return statuses
    records = SweepRecords(meta)
    last = [0.0]

    def watch(progress: list[batched.Progress]) -> set[int]:
        now = time.monotonic()
        if now - last[0] < progress_interval:
            return set()
        last[0] = now
        stop = records.batch_progress(
            worker, [(jobs[i].id, epoch, loss, val) for i, epoch, loss, val in progress],
            waiting)
        return {i for i, *_ in progress if jobs[i].id in stop}

    def on_end(i: int, end: batched.TrialEnd) -> None:  # the trial ends as it would alone
        with batched.replaying(end):
            statuses[jobs[i].id] = run_job(jobs[i], worker, meta, artifacts,
                                           progress_interval, notify)

    try:
        batched.train_together([call for _, call in members], watch, on_end)
    except Exception:  # never a batch's failure: the trials not ended yet run alone
        log.exception("a batch of %d trials failed; its trials run alone", len(jobs))
        for job in jobs:
            if job.id not in statuses:
                statuses[job.id] = run_job(job, worker, meta, artifacts, progress_interval,
                                           notify)
    log.info("worker %s trained %d trials as one batch", worker, len(jobs))
    return statuses


# ---------------------------------------------------------------- the closed form's batch


class _EndsTogether:
    """The metadata store as ``run_job`` sees it in a closed-form batch: each trial's end
    (its model and job values, or its failure) is held, not written, and ``commit`` writes
    them all in one transaction (``SweepRecords.finish_batch``); the dataset's record is
    read once, and whether a trial was cancelled is asked once for the whole batch (at most
    every ``interval``). Everything else goes to the store."""

    def __init__(self, meta: MetadataStore, jobs: list[JobRow], interval: float) -> None:
        self._meta = meta
        self._ids = [j.id for j in jobs]
        self._interval = interval
        self._asked = -math.inf
        self._cancelled: set[str] = set()
        self._datasets: dict[tuple[str, str], DatasetRow] = {}
        self.ends: list[tuple[str, dict[str, Any] | None, dict[str, Any]]] = []

    def get_dataset(self, dataset_id: str, tenant: str = "default") -> DatasetRow:
        key = (dataset_id, tenant)
        if key not in self._datasets:
            self._datasets[key] = self._meta.get_dataset(dataset_id, tenant=tenant)
        return self._datasets[key]

    def cancel_requested(self, job_id: str) -> bool:
        now = time.monotonic()
        if now - self._asked >= self._interval:
            self._asked = now
            with self._meta.session() as s:
                self._cancelled = set(s.scalars(select(JobRow.id).where(
                    JobRow.id.in_(self._ids), JobRow.cancel_requested.is_(True))))
        return job_id in self._cancelled

    def finish_with_model(self, job_id: str, worker: str, model: dict[str, Any],
                          job_values: dict[str, Any]) -> ModelRow:
        self.ends.append((job_id, model, job_values))
        return ModelRow(id=model["id"])  # what run_job reads of it: its id

    def finish_job(self, job_id: str, worker: str, **values: Any) -> bool:
        self.ends.append((job_id, None, values))
        return True

    def __getattr__(self, name: str) -> Any:
        return getattr(self._meta, name)


def run_closed_form(jobs: list[JobRow], worker: str, meta: MetadataStore,
                    artifacts: ArtifactStore, progress_interval: float = 0.2,
                    notify: Notify | None = None) -> list[str]:
    """Closed-form trials claimed together: the data read once, one pass of the sufficient
    statistics and one eigendecomposition for the batch (runner.py's ``run_batch``), each
    trial prepared and ended by ``run_job`` as alone; then the batch finishes together:
    every checkpoint written and made durable with one sync (``checkpoints_together``),
    then every trial's end recorded in one transaction. A crash before that commit leaves
    no trial ended (their files are orphans the data directory's sweep removes); one after
    it, every trial ended with its file durable. Returns the trials' final statuses."""
    ends = _EndsTogether(meta, jobs, progress_interval)
    events: list[dict[str, Any]] = []
    with artifacts.checkpoints_together():
        statuses = run_batch(jobs, worker, cast(MetadataStore, ends), artifacts,
                             progress_interval, events.append if notify else None)
    models = {job_id: model["id"] for job_id, model, _ in ends.ends if model is not None}
    if notify and models:  # before and after the commit: see serving/predictor.py
        notify({"event": "model_committing", "job_id": jobs[0].id,
                "model_id": next(iter(models.values()))})
    for job in jobs:
        pause_at("batch_commit", job.id)
    try:
        held = SweepRecords(meta).finish_batch(worker, ends.ends)
    except BaseException:  # not recorded: the files would point nowhere
        for model_id in models.values():
            artifacts.delete_checkpoint(model_id)
        raise
    lost = [job.id for job in jobs if job.id not in held]
    for job_id in lost:  # taken from us (cancelled or recovered): no orphan file
        if job_id in models:
            artifacts.delete_checkpoint(models[job_id])
        log.warning("job %s was no longer held by %s; its end discarded", job_id, worker)
    out = {job.id: status for job, status in zip(jobs, statuses, strict=True)}
    for job_id in lost:
        out[job_id] = meta.get_job(job_id, tenant=None).status
    if notify:
        for event in events:
            if event["event"] != "model_committing" and event["job_id"] in held:
                notify(event)
    return [out[job.id] for job in jobs]
