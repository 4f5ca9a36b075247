"""Migrations on SQLite: they build exactly the SQLAlchemy tables, and adopt an old store."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from sqlalchemy import inspect, text

from service.store import migrate
from service.store.metadata import MetadataStore, make_engine


def test_migrated_schema_matches_the_tables(tmp_path: Path):
    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    migrate.upgrade(engine)
    # a change to tables.py without a revision shows here: write one (migrations/README.md)
    assert migrate.differences(engine) == []
    assert migrate.current(engine) is not None
    engine.dispose()


def test_downgrade_to_nothing_and_up_again(tmp_path: Path):
    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    migrate.upgrade(engine)
    with engine.begin() as conn:
        command.downgrade(migrate.alembic_config(conn), "base")
    assert set(inspect(engine).get_table_names()) == {"alembic_version"}
    migrate.upgrade(engine)
    assert migrate.differences(engine) == []
    engine.dispose()


def test_a_store_from_before_migrations_is_adopted_with_its_rows(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    migrate.upgrade(engine, migrate.BASELINE)
    with engine.begin() as conn:  # what create_all left: the baseline tables, no version
        conn.execute(text("DROP TABLE alembic_version"))
        conn.execute(text(
            "INSERT INTO jobs (id, tenant, status, dataset_id, spec, device, epochs, "
            "progress_epoch, attempts, cancel_requested, created_at) VALUES "
            "('job_old', 'default', 'succeeded', 'ds_x', '{}', 'cpu', 5, 5, 1, 0, "
            "'2026-01-01 00:00:00.000000')"))
    engine.dispose()

    store = MetadataStore(url)
    store.create_schema()  # what every start does
    assert migrate.differences(store.engine) == []
    job = store.get_job("job_old", tenant=None)
    assert job.status == "succeeded" and job.heartbeat_at is None
    assert job.created_at.tzinfo is not None
    store.dispose()


def test_an_upgrade_says_where_the_database_is_in_one_line(tmp_path: Path, caplog):
    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    with caplog.at_level(logging.INFO):
        migrate.upgrade(engine, migrate.BASELINE)
        migrate.upgrade(engine)
        head = migrate.current(engine) or ""
        migrate.upgrade(engine)
    said = [r.getMessage() for r in caplog.records if r.name == migrate.__name__]
    assert said == [f"database at revision {migrate.BASELINE} (new)",
                    f"database at revision {head} (migrated from {migrate.BASELINE})",
                    f"database at revision {head}"]
    engine.dispose()


def test_the_head_read_off_the_files_is_alembics(tmp_path: Path):
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(migrate.alembic_config())
    assert migrate.head() == scripts.get_current_head()
    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    migrate.upgrade(engine)
    assert migrate.current(engine) == migrate.head()
    engine.dispose()


def test_a_store_at_the_head_is_read_not_migrated(tmp_path: Path, monkeypatch):
    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    migrate.upgrade(engine, migrate.BASELINE)
    ran: list[str] = []
    real = command.upgrade
    monkeypatch.setattr(command, "upgrade", lambda cfg, rev: ran.append(rev) or real(cfg, rev))
    migrate.upgrade(engine)  # behind: Alembic migrates it
    assert ran == ["head"] and migrate.current(engine) == migrate.head()
    migrate.upgrade(engine)  # at the head: nothing for Alembic to do, and it is not asked
    assert ran == ["head"]
    engine.dispose()


def test_alembics_own_lines_are_quiet_at_info_and_shown_at_debug():
    from service.logs import configure_logging

    root, alembic = logging.getLogger(), logging.getLogger("alembic")
    handlers, level, alembic_level = root.handlers[:], root.level, alembic.level
    try:
        configure_logging("info")
        assert not logging.getLogger("alembic.runtime.migration").isEnabledFor(logging.INFO)
        assert logging.getLogger("alembic.runtime.migration").isEnabledFor(logging.WARNING)
        assert logging.getLogger(migrate.__name__).isEnabledFor(logging.INFO)
        configure_logging("debug")
        assert logging.getLogger("alembic.runtime.migration").isEnabledFor(logging.DEBUG)
    finally:  # pytest's own handlers back
        root.handlers[:] = handlers
        root.setLevel(level)
        alembic.setLevel(alembic_level)
