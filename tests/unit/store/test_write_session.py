"""A change decided by what it reads takes SQLite's write lock first: two of them at once
are serialized, where a plain session (the driver begins only at the first write) lets the
second act on a stale read. This is what keeps a job from being ended twice. The lock is
waited for by trying again every few milliseconds (``begin_immediate``), for at most
``BUSY_TIMEOUT_S``; another error is not waited on."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from service.store.metadata import MetadataStore
from service.store.session import BUSY_TIMEOUT_S, begin_immediate


@pytest.fixture
def meta(tmp_path: Path) -> Iterator[MetadataStore]:
    store = MetadataStore(f"sqlite:///{tmp_path / 'm.db'}")
    with store.session() as s:
        s.execute(text("CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER)"))
        s.execute(text("INSERT INTO counter VALUES (1, 0)"))
    yield store
    store.dispose()


def _increments(meta: MetadataStore, session) -> int:
    """Two read-then-write increments at once: the second runs whole between the first's
    read and its write, if it can (it waits at most a second for the first to finish)."""
    read, second_done = threading.Event(), threading.Event()

    def first() -> None:
        with session() as s:
            n = s.execute(text("SELECT n FROM counter WHERE id = 1")).scalar_one()
            read.set()
            second_done.wait(1.0)  # a write session holds the second back until here
            s.execute(text("UPDATE counter SET n = :n WHERE id = 1"), {"n": n + 1})

    t = threading.Thread(target=first)
    t.start()
    assert read.wait(30)
    with session() as s:
        n = s.execute(text("SELECT n FROM counter WHERE id = 1")).scalar_one()
        s.execute(text("UPDATE counter SET n = :n WHERE id = 1"), {"n": n + 1})
    second_done.set()
    t.join()
    with meta.session() as s:
        return s.execute(text("SELECT n FROM counter")).scalar_one()


def test_write_sessions_are_serialized(meta):
    assert _increments(meta, meta.write_session) == 2


def test_a_plain_session_would_lose_one(meta):
    """The hazard the write session is for (if this ever holds 2, it is no longer needed)."""
    assert _increments(meta, meta.session) == 1


def _holding(meta: MetadataStore, release: threading.Event) -> threading.Thread:
    """A thread holding the write lock (a write session open) until ``release``."""
    taken = threading.Event()

    def hold() -> None:
        with meta.write_session() as s:
            s.execute(text("UPDATE counter SET n = n + 10 WHERE id = 1"))
            taken.set()
            release.wait(30)

    t = threading.Thread(target=hold)
    t.start()
    assert taken.wait(30)
    return t


def test_a_write_session_waits_for_the_lock_then_sees_the_other_write(meta):
    other = MetadataStore(str(meta.engine.url))  # another connection pool: another writer
    release = threading.Event()
    t = _holding(meta, release)
    threading.Timer(0.3, release.set).start()  # held longer than the first tries' pauses
    with other.write_session() as s:
        assert s.execute(text("SELECT n FROM counter")).scalar_one() == 10
        s.execute(text("UPDATE counter SET n = n + 1 WHERE id = 1"))
    t.join()
    with meta.session() as s:
        assert s.execute(text("SELECT n FROM counter")).scalar_one() == 11
    other.dispose()


def test_begin_immediate_gives_up_after_its_timeout_and_restores_sqlites_wait(meta):
    other = MetadataStore(str(meta.engine.url))
    release = threading.Event()
    t = _holding(meta, release)
    try:
        with other.engine.connect() as conn:
            with pytest.raises(OperationalError, match="locked"):
                begin_immediate(conn, timeout=0.05)
            busy = conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one()
            assert busy == int(BUSY_TIMEOUT_S * 1000)
    finally:
        release.set()
        t.join()
        other.dispose()


def test_begin_immediate_raises_another_error_at_once(meta):
    with meta.engine.connect() as conn:
        conn.exec_driver_sql("BEGIN")  # a transaction open: BEGIN again is an error, not busy
        with pytest.raises(OperationalError, match="within a transaction") as raised:
            begin_immediate(conn, timeout=600)  # a test timeout if it took this for busy
        assert raised.value.orig.sqlite_errorcode & 0xFF != 5  # type: ignore[union-attr]
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one() == \
            int(BUSY_TIMEOUT_S * 1000)
