"""A job's history keeps its epoch numbers as a run (first, step, count: 13 bytes) when they
are one (every epoch, or every ``log_every``-th), and as the int32 array otherwise; every
reader of the column gets the array it was given, and a row written as an array before
reads as it always did."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text

from service.store.metadata import MetadataStore
from service.store.sweeps import SweepRecords
from service.store.tables import compact_epochs, expand_epochs
from service.worker.runner import history_values


@pytest.fixture()
def meta(tmp_path: Path):
    store = MetadataStore(f"sqlite:///{tmp_path / 'meta.db'}")
    store.create_schema()
    yield store
    store.dispose()


def _job(meta: MetadataStore, epochs: np.ndarray | None = None, raw: bytes | None = None
         ) -> str:
    """A job that ended with a history of ``epochs`` (through the store's column type), or
    with ``raw`` epoch bytes written past it (a row from before the run encoding)."""
    job_id = meta.create_job(tenant="default", dataset_id="ds_x", spec={}, device="cpu",
                             epochs=1).id
    meta.claim(job_id, "w")
    n = len(epochs) if epochs is not None else len(raw or b"") // 4
    loss = np.linspace(1.0, 0.5, n, dtype=np.float32)
    if epochs is not None:
        values = history_values(epochs, loss, None)
    else:
        values = {"history_loss": loss.tobytes()}
    assert meta.finish_job(job_id, "w", status="succeeded", **values)
    if raw is not None:
        with meta.engine.begin() as conn:  # as an older version wrote it: the plain array
            conn.execute(text("UPDATE jobs SET history_epoch = :b WHERE id = :id"),
                         {"b": raw, "id": job_id})
    return job_id


def _stored(meta: MetadataStore, job_id: str) -> bytes:
    with meta.engine.connect() as conn:
        return bytes(conn.execute(text("SELECT history_epoch FROM jobs WHERE id = :id"),
                                  {"id": job_id}).scalar_one())


def _read(meta: MetadataStore, job_id: str) -> list[np.ndarray]:
    """The epochs as each reader gets them: the job row (the API's history, plots, the
    CSV) and the sweep controller's ``history``."""
    row = meta.get_job(job_id, tenant=None)
    epochs, _, _ = SweepRecords(meta).history(job_id)
    return [np.frombuffer(row.history_epoch, "<i4"), epochs]


@pytest.mark.parametrize("epochs", [
    np.arange(1, 10_001),  # every epoch
    np.arange(5, 1001, 5),  # every 5th, the last on the stride
    np.arange(1, 5),  # the shortest that is kept as a run
    np.array([-7, -3, 1, 5, 9]),
    np.array([2**31 - 1, 2**31 - 2, 2**31 - 3, 2**31 - 4]),
])
def test_a_regular_history_is_kept_as_a_run_and_reads_as_the_array(meta, epochs):
    job_id = _job(meta, epochs)
    assert len(_stored(meta, job_id)) == 13
    for got in _read(meta, job_id):
        assert got.dtype == np.dtype("<i4")
        assert np.array_equal(got, epochs)
    assert meta.get_job(job_id, tenant=None).history_epoch == \
        epochs.astype("<i4").tobytes()


@pytest.mark.parametrize("epochs", [
    np.concatenate([np.arange(5, 96, 5), [98]]),  # every 5th and the last, off the stride
    np.array([1, 2, 4, 8, 16, 32]),
    np.array([1, 2, 3, 5]),
    np.array([1, 2, 3]),  # as short as a run's record: kept as it is
    np.array([7]),
    np.array([], dtype=np.int64),
])
def test_an_irregular_history_is_kept_as_the_array(meta, epochs):
    job_id = _job(meta, epochs)
    assert _stored(meta, job_id) == epochs.astype("<i4").tobytes()
    for got in _read(meta, job_id):
        assert np.array_equal(got, epochs)


def test_a_row_written_as_an_array_before_reads_as_it_was(meta):
    for epochs in (np.arange(1, 10_001), np.array([1, 2, 4, 8, 16])):
        raw = epochs.astype("<i4").tobytes()
        job_id = _job(meta, raw=raw)
        assert _stored(meta, job_id) == raw  # no migration rewrote it
        for got in _read(meta, job_id):
            assert np.array_equal(got, epochs)


def test_the_run_encoding_round_trips_and_never_takes_an_array_for_a_run():
    rng = np.random.default_rng(0)
    for n in range(0, 40):
        for arr in (np.arange(n) * 3 + 1, rng.integers(-2**31, 2**31, n),
                    np.sort(rng.integers(0, 100, n))):
            raw = arr.astype("<i4").tobytes()
            kept = compact_epochs(raw)
            assert expand_epochs(kept) == raw
            assert compact_epochs(raw) == kept  # asked again: the remembered answer
            assert len(kept) in (len(raw), 13)
            assert expand_epochs(raw) == raw  # an array is never read as a run
