"""The SQL engine, sessions and paging that every record store shares (SQLite by default,
PostgreSQL in scale-out)."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

import orjson
from sqlalchemy import (
    Connection,
    CursorResult,
    Engine,
    Update,
    create_engine,
    event,
    func,
    select,
    text,
)
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from service import faults

log = logging.getLogger(__name__)


# every byte to a space but the ASCII digits (to "0"): 19 zeros in a row are a long number
_DIGITS = bytes(0x30 if 0x30 <= c <= 0x39 else 0x20 for c in range(256))
_LONG_NUMBER = b"0" * 19


def json_loads(text: str | bytes) -> Any:
    """A JSON column's value as ``json.loads`` reads it, read by orjson (some 5 times
    faster: a sweep's trials are read as a few hundred small documents a step). What orjson
    refuses (NaN, lone surrogates) goes to ``json.loads``, and so does a document with a
    number of 19 digits or more, which orjson would read as a float where ``json.loads``
    keeps the integer (a float's repr has at most 17)."""
    try:
        raw = text.encode() if isinstance(text, str) else bytes(text)
        if len(raw) < len(_LONG_NUMBER) or _LONG_NUMBER not in raw.translate(_DIGITS):
            return orjson.loads(raw)
    except (UnicodeError, orjson.JSONDecodeError):
        pass
    return json.loads(text)


_FALLBACK = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def json_dumps(value: Any) -> str:
    """A JSON column's value as ``json.dumps`` reads back, written by orjson (some 10 times
    faster: a sweep writes a few hundred specs, params and metrics at its start and at each
    batch's end, under the database's write lock). What orjson would write otherwise goes to
    ``json.dumps``: what orjson refuses (keys that are not strings, integers past 64 bits,
    types ``json.dumps`` refuses too, such as datetimes), and a document holding a float
    that is not finite, which orjson writes as null where ``json.dumps`` writes NaN or
    Infinity (looked for only where orjson wrote a null: its text read back is not the
    document). Only the text differs: no spaces, and UTF-8 where ``json.dumps`` escapes to
    ASCII. orjson also writes two kinds of value ``json.dumps`` refuses, and it has no
    option to refuse them: an ``enum.Enum`` member (as its value) and a ``uuid.UUID`` (as
    its string). No column is given either (the API's models dump to JSON types first)."""
    try:
        out = orjson.dumps(value, option=_FALLBACK)
    except TypeError:
        return json.dumps(value)
    if b"null" in out and orjson.loads(out) != value:  # a NaN read back as None, say
        return json.dumps(value)
    return out.decode()


BUSY_TIMEOUT_S = 30.0
"""How long a write waits for SQLite's write lock before "database is locked"."""
PAGE_SIZE = 16_384
"""The page size of a database SQLite creates here (one made before keeps its own): a
job's loss history is a blob of 40 KB (10 000 epochs), kept in overflow pages and written
to the WAL a page at a time. A batch end of 50 such jobs took 4.1 ms at SQLite's default
of 4 KB and 2.6 ms at 16 KB (64 KB: 3.1 ms)."""
WAL_BACKSTOP_BYTES = 40 << 20
"""SQLite checkpoints its WAL itself only past this much (as pages: ``wal_autocheckpoint``
is the byte count over the page size): the embedded server does it in the background
instead (``Records.checkpoint``, from the worker pool's watcher, twice a second). At
SQLite's default of 1 000 pages, the commit that crossed them copied the WAL into the
database and synced it before it returned: 10 to 15 ms more on a job's or a batch's end,
and its events (which answer the long polls) waited for it. The backstop bounds the WAL of
a process that writes while no server runs."""
_MOST_PAUSE_S = 0.002


def begin_immediate(conn: Connection, timeout: float = BUSY_TIMEOUT_S) -> None:
    """``BEGIN IMMEDIATE`` on a SQLite connection, waiting for another writer by trying again
    every 0.1 to 2 ms. SQLite's own wait (``busy_timeout``) sleeps 1, 2, 5, 10, 15, 20, 25,
    25, ... ms between its tries, so a writer held up 19 ms got the lock at 33 ms: the two
    workers' batch ends and the sweep controller's record of them queued behind each other
    that way, 20 to 35 ms each (timed in a sweep of 100 trials)."""
    conn.exec_driver_sql("PRAGMA busy_timeout = 0")
    try:
        deadline = time.monotonic() + timeout
        pause = 0.0001
        while True:
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                return
            except OperationalError as e:
                code = getattr(e.orig, "sqlite_errorcode", None)
                if code is None or code & 0xFF != 5 or time.monotonic() >= deadline:
                    raise  # not SQLITE_BUSY (or its extended codes), or waited long enough
            time.sleep(pause)
            pause = min(2 * pause, _MOST_PAUSE_S)
    finally:
        conn.exec_driver_sql(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S,
                                                  "check_same_thread": False},
                               json_serializer=json_dumps, json_deserializer=json_loads)

        @event.listens_for(engine, "connect")
        def _pragmas(conn: Any, _record: Any) -> None:
            cur = conn.cursor()
            cur.execute(f"PRAGMA page_size={PAGE_SIZE}")  # before anything is written
            cur.execute("PRAGMA journal_mode=WAL")  # readers never wait for the worker's writes
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
            page = cur.execute("PRAGMA page_size").fetchone()[0]
            cur.execute(f"PRAGMA wal_autocheckpoint={WAL_BACKSTOP_BYTES // int(page)}")
            cur.close()

        if os.environ.get("FITSERVE_FAULT_DISK"):  # the fault suite's simulated full disk
            event.listen(engine, "checkout", _simulated_disk)
        return engine
    return create_engine(url, pool_pre_ping=True, json_serializer=json_dumps)


def _simulated_disk(conn: Any, _record: Any, _proxy: Any) -> None:
    """While the simulated disk is full, the database cannot grow past its current pages."""
    cur = conn.cursor()
    if faults.db_full():
        pages = cur.execute("PRAGMA page_count").fetchone()[0]
        cur.execute(f"PRAGMA max_page_count = {int(pages)}")
    else:
        cur.execute("PRAGMA max_page_count = 4294967294")
    cur.close()


def updated_rows(s: Session, stmt: Update) -> int:
    """Run an UPDATE; how many rows it matched. ``Session.execute`` is typed as returning a
    ``Result``; for an UPDATE it is a ``CursorResult``, which has ``rowcount``."""
    return cast(CursorResult[Any], s.execute(stmt)).rowcount


class Page:
    def __init__(self, rows: Sequence[Any], count: int, next_cursor: str | None) -> None:
        self.rows = rows
        self.count = count
        self.next = next_cursor


class Records:
    """The engine and sessions; the record stores of each aggregate extend it."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def create_schema(self) -> None:
        """Migrate the schema to the newest revision (Alembic; see store/migrations/)."""
        from service.store.migrate import upgrade

        upgrade(self.engine)

    def ping(self) -> str:
        """``ok`` when the database answers, else the error's type (for readiness)."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as e:  # noqa: BLE001 - reported, not raised
            return f"error: {type(e).__name__}"
        return "ok"

    def checkpoint(self) -> None:
        """Copy the pages SQLite's WAL holds into the database file, without waiting for
        readers or writers (PASSIVE: what a reader still uses stays for the next one);
        nothing on PostgreSQL. See ``WAL_BACKSTOP_BYTES``."""
        if self.engine.dialect.name == "sqlite":
            with self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")

    def dispose(self) -> None:
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions.begin() as s:
            yield s

    @contextmanager
    def write_session(self) -> Iterator[Session]:
        """A session for a change decided by what it reads (a job's state before its end is
        recorded, say): nothing else may write between the read and the write. PostgreSQL
        gets that from the rows' locks (``FOR UPDATE``); SQLite's driver starts a
        transaction only at the first write, so a read before it could be stale by then:
        here the transaction takes SQLite's write lock first (``BEGIN IMMEDIATE``)."""
        with self._sessions.begin() as s:
            if self.engine.dialect.name == "sqlite":
                begin_immediate(s.connection())
            yield s

    # ------------------------------------------------------------ generic

    def _page(
        self, model: Any, filters: list[Any], limit: int, cursor: str | None
    ) -> Page:
        with self.session() as s:
            count = s.scalar(select(func.count()).select_from(model).where(*filters)) or 0
            q = select(model).where(*filters)
            if cursor:
                q = q.where(model.id < cursor)
            rows = list(s.scalars(q.order_by(model.id.desc()).limit(limit + 1)))
        more = len(rows) > limit
        rows = rows[:limit]
        return Page(rows, count, rows[-1].id if more and rows else None)
