"""The scale-out task body: a store fault under a job gives the job back to the queue at
once, its attempt refunded, and the task publishes itself again; it does not wait for the
reaper's heartbeat timeout and cost the job an attempt."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from service.config import Settings
from service.store.artifacts import open_artifacts
from service.store.metadata import MetadataStore
from service.worker.celery import tasks


class _Retry(Exception):
    pass


class _Task:
    def __init__(self) -> None:
        self.retried: dict | None = None

    def retry(self, **kwargs) -> _Retry:
        self.retried = kwargs
        return _Retry()


def _fault(*_args, **_kwargs):
    raise OperationalError("UPDATE jobs", {}, Exception("database is locked"))


@pytest.fixture
def ctx(tmp_path: Path, monkeypatch) -> Iterator[tasks._Child]:
    settings = Settings(data_dir=tmp_path, workers=0, heartbeat_interval_s=0.05)
    meta = MetadataStore(f"sqlite:///{tmp_path / 'm.db'}")
    meta.create_schema()
    child = tasks._Child(settings=settings, name="host:1", meta=meta,
                         artifacts=open_artifacts(tmp_path / "artifacts"), catalog=None)
    monkeypatch.setattr(tasks, "_child", child)
    monkeypatch.setattr(tasks, "GIVE_BACK_WAITS", (0.01, 0.01))
    yield child
    meta.dispose()


def _queued_job(meta: MetadataStore) -> str:
    ds, _ = meta.add_dataset(tenant="default", name=None, sha256="a" * 64, rows=2, features=1,
                             targets=1, feature_names=["x"], target_names=["y"], columns=[],
                             size_bytes=16)
    return meta.create_job(tenant="default", dataset_id=ds.id, spec={}, device="cpu",
                           epochs=1).id


def test_a_store_fault_gives_the_job_back_refunded_and_the_task_retries(ctx, monkeypatch):
    job_id = _queued_job(ctx.meta)
    monkeypatch.setattr(tasks, "run_job", _fault)
    task = _Task()
    with pytest.raises(_Retry):
        tasks._run_job_task(task, job_id)
    assert task.retried == {"countdown": tasks.RETRY_AFTER_S, "max_retries": None}
    job = ctx.meta.get_job(job_id, tenant=None)
    assert (job.status, job.attempts) == ("queued", 0)
    # and the retried delivery claims it like any other
    monkeypatch.setattr(tasks, "run_job", lambda job, *_a: "succeeded")
    assert tasks.execute(job_id, ctx) == "succeeded"


def test_a_store_that_never_takes_the_job_back_leaves_it_to_the_reaper(ctx, monkeypatch):
    job_id = _queued_job(ctx.meta)
    monkeypatch.setattr(tasks, "run_job", _fault)
    monkeypatch.setattr(ctx.meta, "requeue_running", _fault)
    with pytest.raises(OperationalError):
        tasks.execute(job_id, ctx)
    assert ctx.meta.get_job(job_id, tenant=None).status == "running"


def test_a_bug_is_not_given_back(ctx, monkeypatch):
    job_id = _queued_job(ctx.meta)

    def bug(*_a):
        raise KeyError("bug")

    monkeypatch.setattr(tasks, "run_job", bug)
    with pytest.raises(KeyError):
        tasks.execute(job_id, ctx)
