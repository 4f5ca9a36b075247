"""Alembic environment: the connection comes from ``service.store.migrate``, never from an
ini file, so the same code migrates SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any, Literal

from alembic import context
from sqlalchemy import TypeDecorator, text

from service.store.tables import Base

# one number for every fitserve deployment: API replicas starting at once take turns
_PG_LOCK = 0x66697473  # "fits"


def _render_item(kind: str, obj: Any, autogen_context: Any) -> str | Literal[False]:
    """Revisions name plain SQLAlchemy types, never our Python-side wrappers (UTCDateTime):
    a revision must not break when service code moves."""
    if kind == "type" and isinstance(obj, TypeDecorator):
        return f"sa.{obj.impl!r}"
    return False


def _run() -> None:
    connection = context.config.attributes["connection"]
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite alters tables by copying them; batch mode does that for us
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        render_item=_render_item,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK})
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("offline (SQL script) migrations are not supported; use `fitserve db`")
_run()
