"""The metadata store, unchanged, on PostgreSQL: migrations, column types, and the atomic
paths (claims, dataset dedupe, model versions) under concurrent callers."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta

import numpy as np
import pytest

from service.store import migrate
from service.store.metadata import MetadataStore
from service.store.tables import utcnow

pytestmark = pytest.mark.integration


@pytest.fixture
def meta(new_database):
    store = MetadataStore(new_database())
    store.create_schema()
    yield store
    store.dispose()


def _race(n: int, fn: Callable[[int], object]) -> list[object]:
    """Run ``fn(i)`` in ``n`` threads released at once; their results in order."""
    gate = threading.Barrier(n)
    out: list[object] = [None] * n

    def run(i: int) -> None:
        gate.wait()
        out[i] = fn(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return out


def test_migrated_postgres_schema_matches_the_tables(meta):
    assert migrate.differences(meta.engine) == []
    meta.create_schema()  # a second start (another replica) changes nothing
    assert migrate.differences(meta.engine) == []


def test_columns_round_trip(meta):
    start = utcnow()
    ds, created = meta.add_dataset(
        tenant="default", name="d", sha256="a" * 64, rows=2, features=1, targets=1,
        feature_names=["x"], target_names=["y"],
        columns=[{"name": "x", "mean": 0.5}], size_bytes=10,
    )
    assert created and ds.columns == [{"name": "x", "mean": 0.5}]
    job = meta.create_job(tenant="default", dataset_id=ds.id, spec={"epochs": 3}, device="cpu",
                          epochs=3)
    meta.claim(job.id, "w1")
    loss = np.array([1.5, 0.25, 0.125], "<f4")
    assert meta.finish_job(job.id, "w1", status="failed", error={"type": "x", "message": "m"},
                           history_loss=loss.tobytes())
    back = meta.get_job(job.id)
    assert np.array_equal(np.frombuffer(back.history_loss, "<f4"), loss)
    assert back.spec == {"epochs": 3} and back.error["type"] == "x"
    end = utcnow()
    for moment in (back.created_at, back.started_at, back.finished_at, back.heartbeat_at):
        assert moment.tzinfo is not None
        assert start <= moment <= end, (start, moment, end)  # in UTC, whatever the zone


def test_one_of_many_claims_of_a_job_wins(meta):
    job = meta.create_job(tenant="default", dataset_id="ds_x", spec={}, device="cpu", epochs=1)
    won = _race(8, lambda i: meta.claim(job.id, f"w{i}"))
    assert sum(r is not None for r in won) == 1
    assert meta.get_job(job.id).attempts == 1


def test_claim_next_hands_each_job_to_one_worker(meta):
    ids = {meta.create_job(tenant="default", dataset_id="ds_x", spec={}, device="cpu",
                           epochs=1).id for _ in range(12)}

    def drain(i: int) -> list[str]:
        got = []
        while (job := meta.claim_next(f"w{i}")) is not None:
            got.append(job.id)
        return got

    taken = [j for got in _race(4, drain) for j in got]  # type: ignore[union-attr]
    assert sorted(taken) == sorted(ids)


def test_claims_of_the_oldest_from_one_list_each_get_their_count(meta):
    ids = [meta.create_job(tenant="default", dataset_id="ds_x", spec={}, device="cpu",
                           epochs=1).id for _ in range(40)]
    got = _race(4, lambda i: meta.claim_batch(ids, f"w{i}", most=10))  # a sweep's shares
    taken = [j.id for batch in got for j in batch]  # type: ignore[union-attr]
    assert [len(batch) for batch in got] == [10] * 4  # type: ignore[arg-type]
    assert sorted(taken) == sorted(ids)  # each trial to one worker, none left behind
    assert {meta.get_job(i).attempts for i in ids} == {1}


def test_the_same_dataset_stored_concurrently_is_one_record(meta):
    def add(_: int):
        row, created = meta.add_dataset(
            tenant="default", name=None, sha256="b" * 64, rows=1, features=1, targets=1,
            feature_names=["x"], target_names=["y"], columns=[], size_bytes=1)
        return row.id, created

    results = _race(6, add)
    assert len({r[0] for r in results}) == 1  # type: ignore[index]
    assert sum(r[1] for r in results) == 1  # type: ignore[index]


def test_model_versions_of_one_name_are_distinct_under_concurrency(meta):
    jobs = []
    for i in range(6):
        job = meta.create_job(tenant="default", dataset_id="ds_x", spec={}, device="cpu",
                              epochs=1, model_name="m")
        meta.claim(job.id, f"w{i}")
        jobs.append(job)

    def finish(i: int):
        model = {"id": f"mdl_{i:024x}", "tenant": "default", "name": "m",
                 "job_id": jobs[i].id, "dataset_id": "ds_x", "kind": "linear", "config": {},
                 "in_features": 1, "out_features": 1, "weight": [[1.0]], "bias": [0.0],
                 "feature_names": ["x"], "target_names": ["y"], "metrics": {}, "spec": {},
                 "device": "cpu", "checkpoint": "c", "sha256": "0" * 64}
        return meta.finish_with_model(jobs[i].id, f"w{i}", model, {})

    rows = _race(6, finish)
    assert sorted(r.version for r in rows) == [1, 2, 3, 4, 5, 6]  # type: ignore[union-attr]


def test_reaper_queries_on_postgres(meta):
    job = meta.create_job(tenant="default", dataset_id="ds_x", spec={}, device="cuda",
                          epochs=1)
    meta.claim(job.id, "w1")
    assert meta.requeue_stale(utcnow() - timedelta(seconds=60), 3) == []
    requeued = meta.requeue_stale(utcnow() + timedelta(seconds=1), 3)
    assert [j.id for j in requeued] == [job.id]
    assert [j.id for j in meta.queued_jobs(utcnow() + timedelta(seconds=1))] == [job.id]
