"""A change decided by what it reads takes SQLite's write lock first: two of them at once
are serialized, where a plain session (the driver begins only at the first write) lets the
second act on a stale read. This is what keeps a job from being ended twice."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from service.store.metadata import MetadataStore


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
