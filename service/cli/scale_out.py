"""Commands of the scale-out deployment: ``fitserve worker``, ``fitserve workers`` and
``fitserve db upgrade | check | revision``."""

from __future__ import annotations

import socket
from enum import StrEnum
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from sqlalchemy import Engine

db = typer.Typer(help="The metadata store's schema (Alembic migrations).", no_args_is_help=True)

class DeviceKind(StrEnum):
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


_DEVICE = typer.Option(DeviceKind.cpu, help="The device kind whose queue to consume.")


def worker(
    device: DeviceKind = _DEVICE,
    concurrency: int = typer.Option(1, min=1, max=64, help="Jobs run at once (processes)."),
    name: str | None = typer.Option(None, help="Worker name (default KIND-PID@HOST)."),
) -> None:
    """Run a Celery worker on the queue of one device kind (FITSERVE_QUEUE=celery)."""
    from service.config import Settings
    from service.logs import configure_logging
    from service.worker.celery.tasks import run_worker

    settings = Settings()
    configure_logging(settings.log_level)
    if settings.queue != "celery":
        typer.echo("fitserve worker serves the celery queue: set FITSERVE_QUEUE=celery and "
                   "FITSERVE_BROKER_URL (the embedded mode's workers start with `serve`)",
                   err=True)
        raise typer.Exit(2)
    run_worker(settings, device.value, concurrency, name)


def workers(
    host: str | None = typer.Option(
        None, help="Only workers on this host; exit 1 when there is none (a healthcheck)."),
) -> None:
    """List the live workers of each device kind, from the broker's registry."""
    from service.config import Settings
    from service.worker.celery.broker import DEVICE_KINDS, WorkerRegistry, redis_client

    settings = Settings()
    registry = WorkerRegistry(redis_client(settings.broker_url), settings.broker_prefix,
                              settings.heartbeat_timeout_s)
    found = 0
    for kind in DEVICE_KINDS:
        names = registry.live(kind)
        if host is not None:
            names = [n for n in names if n.rsplit("@", 1)[-1] in (host, socket.getfqdn(host))]
        found += len(names)
        typer.echo(f"{kind}: {len(names)} {' '.join(sorted(names))}".rstrip())
    if host is not None and not found:
        raise typer.Exit(1)


def _engine() -> Engine:
    from service.config import Settings
    from service.store.metadata import make_engine

    return make_engine(Settings().resolved_database_url)


@db.command()
def upgrade(revision: str = typer.Argument("head", help="Target revision.")) -> None:
    """Migrate the metadata store (FITSERVE_DATABASE_URL) to the newest schema."""
    from service.config import Settings
    from service.logs import configure_logging
    from service.store import migrate

    settings = Settings()
    configure_logging(settings.log_level)
    settings.data_dir.mkdir(parents=True, exist_ok=True)  # the default SQLite file's home
    engine = _engine()
    try:
        migrate.upgrade(engine, revision)
        typer.echo(f"schema at {migrate.current(engine)}")
    finally:
        engine.dispose()


@db.command()
def check() -> None:
    """Exit 1 when the store's schema differs from service/store/tables.py."""
    from service.store import migrate

    engine = _engine()
    try:
        diffs = migrate.differences(engine)
    finally:
        engine.dispose()
    for d in diffs:
        typer.echo(repr(d))
    if diffs:
        raise typer.Exit(1)
    typer.echo("schema matches the tables")


@db.command()
def revision(message: str = typer.Option(..., "-m", "--message", help="What it changes.")) -> None:
    """Write a new revision for what tables.py has beyond the newest one (autogenerate)."""
    from service.store import migrate

    paths = migrate.new_revision(message)
    for p in paths:
        typer.echo(f"wrote {p}: read it and tidy it (store/migrations/README.md)")
