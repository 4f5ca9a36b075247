"""The scale-out queue against real Redis and PostgreSQL, in this process: publishing and
routing, why a job waits, recovery of lost messages, and the task body's claim."""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import timedelta

import numpy as np
import pytest
from sqlalchemy import update

from service.config import Settings
from service.data.datasets import store_dataset
from service.store.metadata import MetadataStore
from service.store.tables import JobRow, utcnow
from service.worker.celery.app import queue_size
from service.worker.celery.queue import CeleryQueue
from service.worker.celery.tasks import child_context, execute
from tests.integration.conftest import REDIS_URL, hostname

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(tmp_path, new_database, new_prefix) -> Settings:
    return Settings(data_dir=tmp_path / "data", device="cpu", queue="celery",
                    broker_url=REDIS_URL, broker_prefix=new_prefix(),
                    database_url=new_database(), heartbeat_interval_s=0.2,
                    heartbeat_timeout_s=2, reaper_interval_s=0.5)


@pytest.fixture
def meta(settings):
    store = MetadataStore(settings.resolved_database_url)
    store.create_schema()
    yield store
    store.dispose()


@pytest.fixture
def queue(settings, meta):
    q = CeleryQueue(settings, meta)
    yield q
    q.redis.close()


@pytest.fixture
def ctx(settings):
    """What a worker's pool process runs jobs with."""
    c = child_context(settings)
    yield c
    c.close()


def _job(meta: MetadataStore, device: str = "cpu", dataset_id: str = "ds_x", **spec) -> str:
    return meta.create_job(tenant="default", dataset_id=dataset_id, spec=spec, device=device,
                           epochs=spec.get("epochs", 10)).id


def test_jobs_go_to_the_queue_of_their_device_kind(queue, meta):
    queue.notify(_job(meta, "cuda:1"), "cuda:1")
    queue.notify(_job(meta, "cpu"))  # the device looked up when not given
    assert queue_size(queue.app, "cuda") == 1
    assert queue_size(queue.app, "cpu") == 1
    assert queue_size(queue.app, "mps") == 0


def test_a_job_no_worker_serves_says_why_until_one_comes(queue, meta):
    job = meta.get_job(_job(meta, "cuda"), None)
    reason = queue.waiting_reason(job)
    assert reason is not None and "no worker serves the cuda queue" in reason
    assert "fitserve worker --device cuda" in reason
    assert queue.resolve_device(None, "auto") == "cpu"  # nothing live: cpu

    queue.registry.beat("cuda", "gpu-1@box")
    queue._live.clear()  # past the one-second cache
    assert queue.waiting_reason(job) is None
    assert queue.resolve_device("auto", "cpu") == "cuda"
    assert queue.resolve_device("cuda:3", "cpu") == "cuda:3"  # the workers have the devices
    with pytest.raises(ValueError, match="unknown device"):
        queue.resolve_device("tpu", "cpu")


def test_the_reaper_republishes_queued_jobs_whose_messages_were_lost(queue, meta):
    job_id = _job(meta, "cpu")
    with meta.session() as s:  # queued a while ago; its message never reached the broker
        s.execute(update(JobRow).where(JobRow.id == job_id)
                  .values(created_at=utcnow() - timedelta(seconds=30)))
    first = queue.reaper.run_once()
    assert first["republished"] == [job_id] and queue_size(queue.app, "cpu") == 1
    assert queue.reaper.run_once()["republished"] == []  # its message now stands for it


def test_an_unreachable_broker_costs_the_submitter_nothing(settings, meta):
    away = settings.model_copy(update={"broker_url": "redis://127.0.0.1:9/0"})
    q = CeleryQueue(away, meta)
    job_id = _job(meta, "cpu")
    # logged; the reaper publishes it once the broker is back. notify returns without
    # raising, and without waiting for the broker to come back (how fast: a few retries)
    raised: list[BaseException | None] = []

    def notify() -> None:
        try:
            q.notify(job_id, "cpu")
            raised.append(None)
        except BaseException as e:  # noqa: BLE001 - reported below
            raised.append(e)

    notified = threading.Thread(target=notify, daemon=True)
    notified.start()
    notified.join(60)
    assert raised == [None], "notify raised or waited for the broker"
    assert meta.get_job(job_id, None).status == "queued"
    assert q.readiness()["broker"].startswith("error")
    assert "broker cannot be reached" in (q.waiting_reason(meta.get_job(job_id, None)) or "")


def test_the_task_body_claims_runs_and_drops_duplicates(ctx, meta):
    x = np.arange(8, dtype=np.float32).reshape(-1, 1)
    ds, _ = store_dataset(meta, ctx.artifacts, x, 2 * x + 1,
                          {"name": None, "feature_names": ["x"], "target_names": ["y"]})
    before = ctx.catalog.read()
    job_id = _job(meta, "cpu", ds.id, epochs=20, seed=0)

    assert execute(job_id, ctx) == "succeeded"
    assert execute(job_id, ctx) == "skipped"  # a redelivery of a finished job
    job = meta.get_job(job_id, None)
    assert job.status == "succeeded" and job.attempts == 1 and job.worker == ctx.name
    assert ctx.catalog.read() == before + 2  # bumped around the commit


def test_a_redelivery_after_its_process_died_runs_the_job_again_at_once(ctx, meta):
    x = np.arange(8, dtype=np.float32).reshape(-1, 1)
    ds, _ = store_dataset(meta, ctx.artifacts, x, 3 * x,
                          {"name": None, "feature_names": ["x"], "target_names": ["y"]})
    job_id = _job(meta, "cpu", ds.id, epochs=20, seed=0)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    meta.claim(job_id, f"{hostname()}:{int(gone.stdout)}")  # its holder is dead

    assert execute(job_id, ctx) == "succeeded"
    job = meta.get_job(job_id, None)
    assert job.attempts == 2 and job.worker == ctx.name

    alive = _job(meta, "cpu", ds.id, epochs=20, seed=0)
    meta.claim(alive, "elsewhere:1")  # another machine's process: only the reaper may judge
    assert execute(alive, ctx) == "skipped"
    assert meta.get_job(alive, None).status == "running"
