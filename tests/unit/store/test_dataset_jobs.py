"""A dataset's delete and a job insert on it are each one transaction that sees the other:
the delete never succeeds while a job on the dataset is committed, and no job is committed on
a deleted dataset. The interleavings are forced with hooks, so they are the same every run;
``tests/integration/test_store_races.py`` runs them (and a free-for-all) on PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from service.errors import Conflict, NotFound
from service.store.metadata import MetadataStore

WAIT = 30.0  # seconds: only a deadline against a hang, never the outcome


def add_dataset(meta: MetadataStore, sha: str = "a" * 64) -> str:
    row, _ = meta.add_dataset(tenant="default", name=None, sha256=sha, rows=2, features=1,
                              targets=1, feature_names=["x"], target_names=["y"], columns=[],
                              size_bytes=16)
    return row.id


def submit(meta: MetadataStore, dataset_id: str,
           then: Callable[[Any, str], None] | None = None) -> str:
    return meta.create_job(tenant="default", dataset_id=dataset_id, spec={}, device="cpu",
                           epochs=1, check_dataset=True, then=then).id


class Outcome:
    """What a call made in a thread returned or raised."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.value: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self.thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            self.value = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            self.error = e

    def result(self) -> Any:
        self.thread.join(WAIT)
        assert not self.thread.is_alive(), "the call hung"
        if self.error is not None:
            raise self.error
        return self.value


def on_statement(meta: MetadataStore, starts: str) -> threading.Event:
    """An event set when ``meta`` is about to send a statement starting with ``starts``."""
    seen = threading.Event()

    @event.listens_for(meta.engine, "before_cursor_execute")
    def _check(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith(starts):
            seen.set()

    return seen


def delete_while_a_submit_commits(submitter: MetadataStore, deleter: MetadataStore) -> None:
    """A submit has inserted its job and holds its transaction open; a delete of the dataset
    starts, and the submit commits just as the delete sends its DELETE. The delete must see
    the job: 409, the dataset kept."""
    ds = add_dataset(submitter)
    inserted, go_on = threading.Event(), threading.Event()

    def hold(_s: Any, _job_id: str) -> None:  # inside the insert's transaction
        inserted.set()
        assert go_on.wait(WAIT)

    job = Outcome(lambda: submit(submitter, ds, hold))
    assert inserted.wait(WAIT)
    deleting = on_statement(deleter, "DELETE FROM DATASETS")
    delete = Outcome(lambda: deleter.delete_dataset(ds))
    assert deleting.wait(WAIT)
    go_on.set()
    job_id = job.result()
    with pytest.raises(Conflict):
        delete.result()
    assert deleter.get_dataset(ds).id == ds
    assert deleter.get_job(job_id).status == "queued"


def submit_after_a_delete(meta: MetadataStore) -> None:
    ds = add_dataset(meta)
    meta.delete_dataset(ds)
    with pytest.raises(NotFound):
        submit(meta, ds)
    assert meta.list_jobs("default", None, 10, None).count == 0


def delete_of_a_dataset_in_use(meta: MetadataStore) -> None:
    ds = add_dataset(meta)
    submit(meta, ds)
    with pytest.raises(Conflict):
        meta.delete_dataset(ds)
    assert meta.get_dataset(ds).id == ds


def two_stores(url: str) -> Iterator[tuple[MetadataStore, MetadataStore]]:
    """Two stores on one database, as the API and another process would be."""
    a = MetadataStore(url)
    a.create_schema()
    b = MetadataStore(url)
    yield a, b
    a.dispose()
    b.dispose()


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[tuple[MetadataStore, MetadataStore]]:
    yield from two_stores(f"sqlite:///{tmp_path / 'm.db'}")


def test_delete_sees_a_submit_committing_meanwhile(stores):
    delete_while_a_submit_commits(*stores)


def test_submit_after_a_delete_is_a_404_and_stores_nothing(stores):
    submit_after_a_delete(stores[0])


def test_delete_of_a_dataset_in_use_is_a_409(stores):
    delete_of_a_dataset_in_use(stores[0])


def test_a_submit_on_another_tenants_dataset_is_a_404(stores):
    meta = stores[0]
    ds = add_dataset(meta)
    with pytest.raises(NotFound):
        meta.create_job(tenant="other", dataset_id=ds, spec={}, device="cpu", epochs=1,
                        check_dataset=True)
