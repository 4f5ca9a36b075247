"""Claiming one job, heartbeats and the reaper, on a real (SQLite) metadata store."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from service.store.metadata import MetadataStore
from service.store.tables import JobRow, utcnow
from service.worker.reaper import Reaper


@pytest.fixture
def meta(tmp_path: Path):
    store = MetadataStore(f"sqlite:///{tmp_path / 'r.db'}")
    store.create_schema()
    yield store
    store.dispose()


def _job(meta: MetadataStore, device: str = "cpu", age_s: float = 0.0) -> str:
    job = meta.create_job(tenant="default", dataset_id="ds_x", spec={}, device=device,
                          epochs=10)
    if age_s:
        _set(meta, job.id, created_at=utcnow() - timedelta(seconds=age_s))
    return job.id


def _set(meta: MetadataStore, job_id: str, **values) -> None:
    with meta.session() as s:
        s.execute(update(JobRow).where(JobRow.id == job_id).values(**values))


def _silence(meta: MetadataStore, job_id: str, seconds: float) -> None:
    _set(meta, job_id, heartbeat_at=utcnow() - timedelta(seconds=seconds))


def test_claim_takes_only_a_queued_job_once(meta):
    job_id = _job(meta)
    first = meta.claim(job_id, "w1")
    assert first is not None and first.status == "running" and first.worker == "w1"
    assert first.attempts == 1 and first.heartbeat_at is not None
    assert meta.claim(job_id, "w2") is None  # a duplicate delivery
    cancelled = _job(meta)
    meta.request_cancel(cancelled)
    assert meta.claim(cancelled, "w1") is None


def test_heartbeat_only_for_the_holder(meta):
    job_id = _job(meta)
    meta.claim(job_id, "w1")
    _silence(meta, job_id, 100)
    silenced = meta.get_job(job_id, None).heartbeat_at
    assert meta.heartbeat(job_id, "w2") is False
    assert meta.get_job(job_id, None).heartbeat_at == silenced
    before = utcnow()
    assert meta.heartbeat(job_id, "w1") is True
    assert before <= meta.get_job(job_id, None).heartbeat_at <= utcnow()


def test_stale_jobs_are_requeued_within_attempts_and_live_ones_kept(meta):
    stale, live, spent, wanted_off = (_job(meta) for _ in range(4))
    for job_id in (stale, live, spent, wanted_off):
        meta.claim(job_id, f"w-{job_id}")
    for job_id in (stale, spent, wanted_off):
        _silence(meta, job_id, 60)
    _set(meta, spent, attempts=3)
    _set(meta, wanted_off, cancel_requested=True)

    requeued = meta.requeue_stale(utcnow() - timedelta(seconds=30), max_attempts=3)

    assert [j.id for j in requeued] == [stale]
    again = meta.get_job(stale, None)
    assert again.status == "queued" and again.worker is None and again.progress_epoch == 0
    assert meta.get_job(live, None).status == "running"
    lost = meta.get_job(spent, None)
    assert lost.status == "failed" and lost.error["type"] == "worker_lost"
    assert meta.get_job(wanted_off, None).status == "cancelled"
    # a second reaper at the same moment finds nothing left to do
    assert meta.requeue_stale(utcnow() - timedelta(seconds=30), max_attempts=3) == []
    # the old holder cannot finish what it no longer holds
    assert meta.finish_job(stale, f"w-{stale}", status="failed") is False


def test_reaper_publishes_requeued_jobs_and_queued_ones_no_message_stands_for(meta):
    published: list[tuple[str, str]] = []
    sizes = {"cpu": 0, "cuda": 3}
    reaper = Reaper(meta, lambda j, d: published.append((j, d)), sizes.__getitem__,
                    interval_s=1.0, heartbeat_timeout_s=10.0, max_attempts=3)
    running = _job(meta, "cuda:1")
    meta.claim(running, "w1")
    _silence(meta, running, 60)
    lost = _job(meta, "cpu", age_s=30)       # the broker's cpu queue is empty: lost
    fresh = _job(meta, "cpu")                # may still be on its way to the broker
    waiting = _job(meta, "cuda", age_s=30)   # the cuda queue has messages: it has one

    result = reaper.run_once()

    assert result["requeued"] == [running]
    assert result["republished"] == [lost]
    assert published == [(running, "cuda:1"), (lost, "cpu")]
    assert fresh not in result["republished"] and waiting not in result["republished"]
