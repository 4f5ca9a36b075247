"""``fitserve serve | ...``: the command line."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypedDict

import typer

if TYPE_CHECKING:
    from fastapi import FastAPI

cli = typer.Typer(help="fitserve: train PyTorch models over REST and serve them.",
                  no_args_is_help=True)

# commands that run the server side; the rest are HTTP clients (the base install)
SERVER_COMMANDS = {"serve", "worker", "workers", "db", "keys"}
_SERVER_MODULES = ("fastapi", "torch", "sqlalchemy", "pydantic_settings")


@cli.callback()
def _needs(ctx: typer.Context) -> None:
    """Server commands say which install they need, not an ImportError."""
    if ctx.invoked_subcommand not in SERVER_COMMANDS:
        return
    import importlib.util

    missing = [m for m in _SERVER_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        typer.echo(f"`fitserve {ctx.invoked_subcommand}` runs the server, which needs "
                   f"pip install 'fitserve[server]' (missing: {', '.join(missing)})", err=True)
        raise typer.Exit(2)


class _ServeOverrides(TypedDict, total=False):
    """The Settings fields ``serve``'s options override (the rest come from the env)."""

    host: str
    port: int
    workers: int


@cli.command()
def serve(
    host: str | None = typer.Option(None, help="Bind address (default FITSERVE_HOST)."),
    port: int | None = typer.Option(None, help="Port (default FITSERVE_PORT)."),
    workers: int | None = typer.Option(None, help="Training worker processes."),
    insecure: bool = typer.Option(
        False, "--insecure", help="Listen beyond loopback with authentication off (unsafe)."
    ),
    role: str = typer.Option(
        "all", help="all: the API and its training workers; predict: a lean predict replica "
        "(no training workers, models served in numpy, torch never imported for them)."
    ),
) -> None:
    """Start the API and its training workers (embedded mode), or a predict replica."""
    import gc

    # the imports and the app make only objects that live as long as the server: no
    # collections while they are made (they found nothing); the app freezes them at start
    gc.disable()
    try:
        app = _serve_app(host, port, workers, insecure, role)
    finally:  # a refused start too (the CLI runs in a test's own process)
        gc.enable()
    from service.main import run_server

    # uvicorn with the edge bounded: header and body deadlines, head size, connections
    run_server(app, app.state.services.settings)


def _serve_app(host: str | None, port: int | None, workers: int | None, insecure: bool,
               role: str) -> FastAPI:
    """The app ``serve`` runs, from its options and the environment (exits 2 if refused)."""
    import logging

    from service.auth.keys import check_bind
    from service.config import Settings
    from service.logs import configure_logging
    from service.main import create_app

    if role not in ("all", "predict") or (role == "predict" and workers):
        typer.echo("--role is all or predict; a predict replica runs no training workers "
                   "(leave --workers out)", err=True)
        raise typer.Exit(2)
    overrides: _ServeOverrides = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    if workers is not None or role == "predict":
        overrides["workers"] = 0 if role == "predict" else (workers or 0)
    settings = Settings(**overrides)
    refusal = check_bind(settings, insecure)
    if refusal:  # said before logging is set up: a refused start leaves no writer thread
        typer.echo(refusal, err=True)
        raise typer.Exit(2)
    if settings.queue == "local" and settings.workers > 0:
        from service.worker.forkserver import start_early

        start_early()  # its imports (torch) run beside this process's next 1.5 s of them
    configure_logging(settings.log_level, background=True)  # off the event loop
    if insecure and not settings.auth:
        logging.getLogger("service").warning(
            "INSECURE: listening on %s with authentication off; anyone who can reach this "
            "port can train, read and delete everything", settings.host)
    return create_app(settings)


def _add_keys() -> None:
    from service.cli.keys import keys

    cli.add_typer(keys, name="keys")


_add_keys()


def _add_scale_out() -> None:
    from service.cli.scale_out import db, worker, workers

    cli.command()(worker)
    cli.command()(workers)
    cli.add_typer(db, name="db")


_add_scale_out()


def _add_client_commands() -> None:
    from service.cli.client import register

    register(cli)  # train, predict, datasets, jobs, models: through the HTTP client
    from service.cli.lifecycle import register as register_lifecycle

    register_lifecycle(cli)  # evaluate, export, import: a model's life after training
    from service.cli.sweeps import register as register_sweeps

    register_sweeps(cli)  # sweep, sweeps: hyperparameter searches


_add_client_commands()


@cli.command()
def version() -> None:
    """Print the version."""
    from service import __version__

    typer.echo(__version__)


def main() -> None:
    cli()

