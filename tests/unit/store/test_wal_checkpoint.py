"""SQLite's WAL is copied into the database file off the commits' path: SQLite does it
itself only past ``WAL_BACKSTOP_PAGES``, and ``Records.checkpoint`` (run by the embedded
server's watcher) does it on request. Seen from outside: what the main file holds, read
without its WAL."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from sqlalchemy import text

from service.store.metadata import MetadataStore
from service.store.session import WAL_BACKSTOP_PAGES


def rows_in_main_file(db: Path, table: str, tmp: Path) -> int:
    """The rows of ``table`` in the database file alone (its WAL left out)."""
    alone = tmp / "alone.db"
    shutil.copyfile(db, alone)
    try:
        with sqlite3.connect(alone) as conn:
            return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    except sqlite3.DatabaseError:  # the table itself is still in the WAL
        return 0
    finally:
        alone.unlink()


def test_the_wal_reaches_the_database_file_when_asked_not_at_each_commit(tmp_path):
    db = tmp_path / "m.db"
    store = MetadataStore(f"sqlite:///{db}")
    try:
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() \
                == WAL_BACKSTOP_PAGES
        store.checkpoint()
        with store.session() as s:  # some 1 600 pages of WAL: past SQLite's default 1 000
            s.execute(text("CREATE TABLE blobs (id INTEGER PRIMARY KEY, b BLOB)"))
            s.execute(text("INSERT INTO blobs (b) VALUES (:b)"),
                      [{"b": bytes(64 * 1024)} for _ in range(100)])
        assert rows_in_main_file(db, "blobs", tmp_path) == 0  # all in the WAL still
        store.checkpoint()
        assert rows_in_main_file(db, "blobs", tmp_path) == 100
    finally:
        store.dispose()
