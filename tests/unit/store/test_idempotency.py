"""Idempotency-Key reservations: the created resource is recorded with the key in the
transaction that creates it, and a reservation whose request never finished is free again
after its bound (or at once, at the embedded server's start)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from service.config import Settings
from service.data.datasets import upload_dataset
from service.errors import Conflict, NotFound
from service.store.artifacts import open_artifacts
from service.store.idempotency import Attempt, Replay, idempotent, release_unfinished
from service.store.keys import IdempotencyRepository, Reservation
from service.store.metadata import MetadataStore
from service.store.tables import IdempotencyRow, utcnow

BODY = b'{"x": [[1]], "y": [[2]]}'


@pytest.fixture
def meta(tmp_path: Path) -> Iterator[MetadataStore]:
    store = MetadataStore(f"sqlite:///{tmp_path / 'm.db'}")
    store.create_schema()
    yield store
    store.dispose()


def _dataset(meta: MetadataStore, sha: str = "a" * 64) -> str:
    row, _ = meta.add_dataset(tenant="default", name=None, sha256=sha, rows=2, features=1,
                              targets=1, feature_names=["x"], target_names=["y"], columns=[],
                              size_bytes=16)
    return row.id


def _job(meta: MetadataStore, dataset_id: str, attempt: Attempt) -> str:
    return meta.create_job(tenant="default", dataset_id=dataset_id, spec={}, device="cpu",
                           epochs=1, check_dataset=True, then=attempt.completion(202)).id


def _record(meta: MetadataStore, key: str) -> IdempotencyRow | None:
    with meta.session() as s:
        return s.scalar(select(IdempotencyRow).where(IdempotencyRow.key == key))


def _age(meta: MetadataStore, key: str, seconds: float) -> None:
    """Make the key's reservation look ``seconds`` old (its request died that long ago)."""
    with meta.session() as s:
        s.execute(update(IdempotencyRow).where(IdempotencyRow.key == key)
                  .values(created_at=utcnow() - timedelta(seconds=seconds)))


def _crashed_request(meta: MetadataStore, key: str) -> Reservation:
    """A request that reserved its key, and whose server died before it finished."""
    held = IdempotencyRepository(meta).reserve("default", "jobs", key,
                                               hashlib.sha256(BODY).hexdigest())
    assert isinstance(held, Reservation)
    return held


def test_the_job_and_its_key_commit_together(meta):
    ds = _dataset(meta)
    with idempotent(meta, "default", "jobs", "k1", BODY, reservation_s=60) as attempt:
        assert isinstance(attempt, Attempt)
        job_id = _job(meta, ds, attempt)
        # the server could die here, before the context ends: the key already names the job
        row = _record(meta, "k1")
        assert row is not None and (row.resource_id, row.status_code) == (job_id, 202)
    with idempotent(meta, "default", "jobs", "k1", BODY, reservation_s=60) as again:
        assert isinstance(again, Replay) and again.resource_id == job_id


class _Crash(BaseException):
    """The server dying: nothing after it runs (an exception handler does not catch it)."""


def test_an_upload_and_its_key_commit_together(meta, tmp_path, monkeypatch):
    """The server dies right after the dataset's record commits: the retry with the key is
    answered as the first request would have been (201, that dataset), not 409 or 200."""
    settings = Settings(data_dir=tmp_path / "data", workers=0)
    artifacts = open_artifacts(tmp_path / "artifacts")

    def upload() -> tuple[str, bool]:
        row, created = upload_dataset(meta, artifacts, settings, "default", media="csv",
                                      body=b"x,y\n1,2\n3,4\n", target=["y"], features=None,
                                      name=None, idempotency_key="up-1")
        return row.id, created

    def crash(*_args: object) -> None:
        raise _Crash

    with monkeypatch.context() as m:  # whatever runs after the work dies with the server
        m.setattr(IdempotencyRepository, "complete", crash)
        m.setattr(IdempotencyRepository, "release", crash)
        with pytest.raises(_Crash):
            upload()
            raise _Crash  # the new code records the key in the commit: nothing after runs
    first = meta.list_datasets("default", 10, None).rows
    assert len(first) == 1
    assert upload() == (first[0].id, True)


def test_a_refused_insert_leaves_the_key_free(meta):
    with pytest.raises(NotFound), \
            idempotent(meta, "default", "jobs", "k1", BODY, reservation_s=60) as attempt:
        assert isinstance(attempt, Attempt)
        _job(meta, "ds_gone", attempt)
    assert _record(meta, "k1") is None
    assert meta.list_jobs("default", None, 10, None).count == 0


def test_an_unfinished_reservation_answers_409_until_its_bound(meta):
    _crashed_request(meta, "k1")
    with pytest.raises(Conflict, match="still being processed"), \
            idempotent(meta, "default", "jobs", "k1", BODY, reservation_s=60):
        pass


def test_an_expired_reservation_is_taken_over_by_the_retry(meta):
    ds = _dataset(meta)
    _crashed_request(meta, "k1")
    _age(meta, "k1", 61)
    with idempotent(meta, "default", "jobs", "k1", BODY, reservation_s=60) as attempt:
        assert isinstance(attempt, Attempt)  # does the work, not a 409
        job_id = _job(meta, ds, attempt)
    row = _record(meta, "k1")
    assert row is not None and row.resource_id == job_id


def test_the_first_holder_cannot_complete_a_key_taken_over(meta):
    ds = _dataset(meta)
    first = _crashed_request(meta, "k1")  # alive after all, but past its bound
    _age(meta, "k1", 61)
    with idempotent(meta, "default", "jobs", "k1", BODY, reservation_s=60) as attempt:
        assert isinstance(attempt, Attempt)
        job_id = _job(meta, ds, attempt)
    late = Attempt(first)
    with pytest.raises(Conflict, match="took it over"):
        _job(meta, ds, late)  # its job rolls back with the refused completion
    IdempotencyRepository(meta).release(first)  # and its release frees nothing
    row = _record(meta, "k1")
    assert row is not None and row.resource_id == job_id
    assert [j.id for j in meta.list_jobs("default", None, 10, None).rows] == [job_id]


def test_expired_reservations_nobody_retries_are_freed(meta):
    _crashed_request(meta, "old")
    _age(meta, "old", 61)
    _crashed_request(meta, "young")
    with idempotent(meta, "default", "jobs", "other", BODY, reservation_s=60) as attempt:
        assert isinstance(attempt, Attempt)
    assert _record(meta, "old") is None  # any keyed request sweeps the expired ones
    assert _record(meta, "young") is not None


def test_release_stale_reservations(meta):
    repo = IdempotencyRepository(meta)
    _crashed_request(meta, "old")
    _age(meta, "old", 120)
    _crashed_request(meta, "young")
    done = _crashed_request(meta, "done")
    repo.complete(done, "job_1", 202)
    assert repo.release_stale_reservations(utcnow() - timedelta(seconds=60)) == 1
    assert _record(meta, "old") is None and _record(meta, "young") is not None
    # at the start of the only server on the store: every unfinished one, whatever its age
    assert release_unfinished(meta) == 1
    assert _record(meta, "young") is None
    row = _record(meta, "done")
    assert row is not None and row.resource_id == "job_1"  # a finished key is kept
