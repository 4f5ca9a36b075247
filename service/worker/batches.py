"""A sweep's trials claimed and trained as batches by one worker.

Two kinds of batch (see ``claim_trials``): the closed form's trials, computed together from
one pass of the sufficient statistics (runner.py's ``run_batch``), and the loop's trials of
one model shape, trained as one tensor program (training/batched.py). Each trial is still
its own job: prepared and ended by ``run_job`` exactly as it would be alone (its data, its
split and initial weights, its metrics, checkpoint and model); only the epochs in between
run in the batch. The trials' progress and heartbeats are written in one transaction per
interval, and a trial cancelled meanwhile (a pruned one) leaves the batch at the next chunk.
"""

from __future__ import annotations

import logging
import time
from typing import cast

from service.store.artifacts import ArtifactStore
from service.store.metadata import MetadataStore
from service.store.sweeps import SweepRecords
from service.store.tables import JobRow
from service.training import batched, closed_form
from service.training.epoch_loop import LoopCall
from service.training.spec import TrainingSpec
from service.worker.runner import Notify, _ReadOnce, claim_batch, run_batch, run_job

log = logging.getLogger(__name__)


def trial_key(spec: TrainingSpec) -> str | None:
    """Trials with equal keys train together (None: alone)."""
    key = closed_form.batch_key(spec)
    return f"closed_form:{key}" if key is not None else batched.batch_key(spec)


def claim_trials(meta: MetadataStore, job: JobRow, worker: str, parts: int = 1
                 ) -> list[JobRow]:
    """``job`` (claimed) and the queued trials of its sweep that train with it as one
    batch (``trial_key``), claimed in one UPDATE (runner.py's ``claim_batch``)."""
    return claim_batch(meta, job, worker, parts, key_of=trial_key)


def run_trials(jobs: list[JobRow], worker: str, meta: MetadataStore,
               artifacts: ArtifactStore, progress_interval: float = 0.2,
               notify: Notify | None = None) -> list[str]:
    """Train claimed trials (``claim_trials``) together; returns their final statuses."""
    if len(jobs) > 1 and closed_form.batch_key(TrainingSpec.model_validate(jobs[0].spec)):
        return run_batch(jobs, worker, meta, artifacts, progress_interval, notify)
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
