"""SQLite's WAL is copied into the database file off the commits' path: SQLite does it
itself only past ``WAL_BACKSTOP_BYTES``, and ``Records.checkpoint`` (run by the embedded
server's watcher) does it on request. Seen from outside: what the main file holds, read
without its WAL."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from sqlalchemy import text

from service.store.metadata import MetadataStore
from service.store.session import PAGE_SIZE, WAL_BACKSTOP_BYTES


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
            assert conn.exec_driver_sql("PRAGMA page_size").scalar() == PAGE_SIZE  # a new file
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() \
                == WAL_BACKSTOP_BYTES // PAGE_SIZE
        store.checkpoint()
        with store.session() as s:  # some 1 250 pages of WAL: past SQLite's default 1 000
            s.execute(text("CREATE TABLE blobs (id INTEGER PRIMARY KEY, b BLOB)"))
            s.execute(text("INSERT INTO blobs (b) VALUES (:b)"),
                      [{"b": bytes(64 * 1024)} for _ in range(300)])
        assert rows_in_main_file(db, "blobs", tmp_path) == 0  # all in the WAL still
        store.checkpoint()
        assert rows_in_main_file(db, "blobs", tmp_path) == 300
    finally:
        store.dispose()


def test_a_database_made_before_keeps_its_pages_and_the_same_backstop_in_bytes(tmp_path):
    db = tmp_path / "old.db"
    with sqlite3.connect(db) as conn:  # as SQLite made them before: 4 KB pages
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t (x)")
    conn.close()
    store = MetadataStore(f"sqlite:///{db}")
    try:
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA page_size").scalar() == 4096
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() \
                == WAL_BACKSTOP_BYTES // 4096
    finally:
        store.dispose()
