"""The dataset delete against job inserts on PostgreSQL (READ COMMITTED): the submit locks
the dataset row FOR KEY SHARE in its insert's transaction, the delete takes the row's lock
before it counts the active jobs. Forced interleavings (the unit test's, on two engines),
and threads racing freely."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import event, func, select

from service.errors import Conflict, NotFound
from service.store.tables import JobRow
from tests.unit.store.test_dataset_jobs import (
    WAIT,
    Outcome,
    add_dataset,
    delete_of_a_dataset_in_use,
    delete_while_a_submit_commits,
    on_statement,
    submit,
    submit_after_a_delete,
    two_stores,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def stores(new_database):
    yield from two_stores(new_database())


def test_delete_sees_a_submit_committing_meanwhile(stores):
    delete_while_a_submit_commits(*stores)


def test_submit_waits_for_a_delete_in_progress_then_404s(stores):
    """The delete holds the row's lock (its DELETE sent, its count not yet): the submit's
    FOR KEY SHARE waits, then finds no row: a 404, nothing stored."""
    a, b = stores
    ds = add_dataset(a)
    counting, go_on = threading.Event(), threading.Event()

    @event.listens_for(b.engine, "before_cursor_execute")
    def _hold(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT COUNT"):  # after the DELETE
            counting.set()
            assert go_on.wait(WAIT)

    delete = Outcome(lambda: b.delete_dataset(ds))
    assert counting.wait(WAIT)
    locking = on_statement(a, "SELECT DATASETS.ID")
    job = Outcome(lambda: submit(a, ds))
    assert locking.wait(WAIT)
    go_on.set()
    assert delete.result().id == ds
    with pytest.raises(NotFound):
        job.result()
    assert a.list_jobs("default", None, 10, None).count == 0


def test_submit_after_a_delete_is_a_404_and_stores_nothing(stores):
    submit_after_a_delete(stores[0])


def test_delete_of_a_dataset_in_use_is_a_409(stores):
    delete_of_a_dataset_in_use(stores[0])


@pytest.mark.parametrize("round_", range(6))
def test_delete_racing_20_submits(stores, round_):
    """Either the delete lost (409) and every submit stored its job, or it won (the record is
    gone) and every submit that came after it is a 404: never a job on a deleted dataset.
    Even rounds release all 21 at once; odd ones the submits as the DELETE is sent."""
    a, b = stores
    ds = add_dataset(a, sha=f"{round_:064x}")
    gate = threading.Barrier(21)
    deleting = on_statement(b, "DELETE FROM DATASETS")

    def one_submit() -> str:
        if round_ % 2:
            assert deleting.wait(WAIT)
        else:
            gate.wait()
        return submit(a, ds)

    def the_delete() -> Any:
        if not round_ % 2:
            gate.wait()
        return b.delete_dataset(ds)

    submits = [Outcome(one_submit) for _ in range(20)]
    delete = Outcome(the_delete)
    stored = []
    for one in submits:
        try:
            stored.append(one.result())
        except NotFound:
            pass
    try:
        delete.result()
        deleted = True
    except Conflict:
        deleted = False
    with a.session() as s:
        on_it = s.scalar(select(func.count()).select_from(JobRow).where(
            JobRow.dataset_id == ds)) or 0
    assert on_it == len(stored)
    if deleted:
        assert not stored, f"{len(stored)} job(s) committed on a deleted dataset"
    else:
        assert len(stored) == 20 and a.get_dataset(ds).id == ds
