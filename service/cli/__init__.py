"""One typer app, ``fitserve``: serve, worker(s), db, keys, and the client commands (train,
predict, datasets, jobs, models). Server commands import the server lazily, so the client commands
work with the base install (``pip install fitserve``)."""

from service.cli.app import cli, main

__all__ = ["cli", "main"]
