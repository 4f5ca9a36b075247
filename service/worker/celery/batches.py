"""A sweep's trials as batches in the scale-out mode.

Each trial is published as its own job, on its device's queue like any job. The task that
claims one (tasks.py's ``execute``) claims with it the queued trials of its sweep that train
with it (worker/batches.py's ``claim_trials``, one UPDATE) and trains them as one batch;
the messages of the trials it took are then dropped where they are delivered (their jobs
are no longer queued). The batch's jobs are heartbeaten together while it runs.

A pool process killed mid-batch leaves its jobs running under a dead name: the redelivery
of the message it was running (``reject_on_worker_lost``) requeues every job of that process
at once on the same machine (tasks.py's ``_take_over_from_dead_holder``), and the reaper
does the same elsewhere after the heartbeat timeout and publishes them again; the batch is
then claimed again, whole or in parts, and rerun. No trial is counted twice: a trial's end
is recorded only while its worker holds its job (``finish_batch``, one transaction, which
records its trial too where no pruner judges it), and a trial's row changes only while it
is open (``record_trial_ends`` and the controller's ``end_trials`` each lock the sweep's row
first).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

from service.store.metadata import MetadataStore
from service.store.sweeps import SweepRecords
from service.store.tables import JobRow
from service.worker.batches import claim_trials, run_trials
from service.worker.beats import beating

log = logging.getLogger(__name__)


def run_with_trials(ctx: Any, job: JobRow, parts: int) -> str | None:
    """Train ``job`` (claimed by ``ctx``'s process) together with the queued trials of its
    sweep that batch with it; returns its final status, or None when it trains alone (not
    a trial, or none to batch with: the caller runs it as any job). ``parts``: the
    processes that may share the sweep's trials."""
    batch = claim_trials(ctx.meta, job, ctx.name, parts)
    if len(batch) == 1:
        return None
    log.info("worker %s took job %s and %d trials of its sweep", ctx.name, job.id,
             len(batch) - 1)
    others = [j.id for j in batch[1:]]  # the task's own job has the task's heartbeat
    with _heartbeats(ctx.meta, others, ctx.name, ctx.settings.heartbeat_interval_s):
        statuses = run_trials(batch, ctx.name, ctx.meta, ctx.artifacts,
                              ctx.settings.progress_interval_s, ctx.notify)
    return statuses[0]


def _heartbeats(meta: MetadataStore, job_ids: Sequence[str], worker: str, every: float
                ) -> AbstractContextManager[None]:
    """Keep a batch's jobs marked alive (one UPDATE a beat for them all) while it runs."""
    records = SweepRecords(meta)
    return beating(lambda: records.batch_progress(worker, [], job_ids), every,
                   f"a batch of {len(job_ids)} trials")
