"""Schema migrations (Alembic), configured in code: ``upgrade`` runs at every start and by
``fitserve db upgrade``; ``differences`` is what ``fitserve db check`` and the tests hold to
nothing, so a table changed without a revision fails them."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, inspect

from service.store.tables import Base

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
BASELINE = "0001"
"""The schema that ``create_all`` made before migrations existed (stamped, not re-created)."""


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("version_path_separator", "os")
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    """The newest revision, read off the files' names: ``new_revision`` numbers them in
    order (0001, 0002, ...), and a test holds this to Alembic's own reading of the scripts."""
    return max(p.name[:4] for p in (MIGRATIONS / "versions").glob("[0-9][0-9][0-9][0-9]_*.py"))


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision``; one transaction (on PostgreSQL, also one lock).
    Says where the database is in one line (alembic's own lines are quieted in logs.py).

    A store already at the head is read, not migrated: Alembic loads every script and runs
    its environment for nothing otherwise, some 20 ms of each start, 0.2 s with its import."""
    if revision == "head" and (stored := current(engine)) == head():
        log.info("database at revision %s", stored)
        return
    with engine.begin() as conn:
        tables = set(inspect(conn).get_table_names())
        cfg = alembic_config(conn)
        before = MigrationContext.configure(conn).get_current_revision()
        came_from = f"migrated from {before}" if before else "new"
        if "jobs" in tables and "alembic_version" not in tables:
            # a store made by an older fitserve with create_all: it is the baseline schema
            command.stamp(cfg, BASELINE)
            came_from = "adopted a store from before migrations"
        command.upgrade(cfg, revision)
        after = MigrationContext.configure(conn).get_current_revision()
    log.info("database at revision %s%s", after, f" ({came_from})" if after != before else "")


def current(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def differences(engine: Engine) -> list[Any]:
    """What the migrated schema lacks or has beyond the SQLAlchemy tables (empty: in step)."""
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(ctx, Base.metadata))


def new_revision(message: str) -> list[str]:
    """Write a revision for what tables.py has beyond the newest one (autogenerate against a
    scratch SQLite file at head); returns the file(s) written. Read and edit it before use."""
    with tempfile.TemporaryDirectory() as tmp:
        engine = create_engine(f"sqlite:///{Path(tmp) / 'scratch.db'}")
        try:
            upgrade(engine)
            with engine.begin() as conn:
                cfg = alembic_config(conn)
                head = ScriptDirectory.from_config(cfg).get_current_head() or "0000"
                scripts = command.revision(
                    cfg, message=message, autogenerate=True, rev_id=f"{int(head) + 1:04d}"
                )
        finally:
            engine.dispose()
    if scripts is None:
        return []
    items = scripts if isinstance(scripts, list) else [scripts]
    return [s.path for s in items if s is not None]
