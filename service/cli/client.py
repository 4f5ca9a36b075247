"""``fitserve train | predict``, and what every client command shares: the server, errors
said as the API says them (message and hint), numbers as the seed program prints them. The
resources' commands are in datasets.py, jobs.py and models.py; all go through service.client.

The server is ``--url``, else ``FITSERVE_URL``, else http://127.0.0.1:8000; the key is
``--api-key``, else ``FITSERVE_API_KEY``. Results go to stdout, the progress bar, notes and
errors to stderr.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from service.client import DEFAULT_URL, Client, FitserveError

URL = typer.Option(DEFAULT_URL, "--url", envvar="FITSERVE_URL", show_envvar=True,
                   help="The fitserve server.")
API_KEY = typer.Option(None, "--api-key", envvar="FITSERVE_API_KEY", show_envvar=True,
                       help="API key, when the server has authentication on.")
STANDARDIZED_NOTE = "loss shown in standardized units; final loss in the data's units"


def endpoint(ctx: typer.Context | None, url: str, api_key: str | None
             ) -> tuple[str, str | None]:
    """The command's ``--url`` and ``--api-key``; where the command line gave one only to
    the group (``fitserve jobs --url U show ID``), the group's."""
    if ctx is None or ctx.parent is None:
        return url, api_key
    parent = ctx.parent

    def typed(c: Any, name: str) -> bool:
        # by name: typer ships its own copy of click, whose enum is not click's
        return getattr(c.get_parameter_source(name), "name", None) == "COMMANDLINE"

    def pick(name: str, own: Any) -> Any:
        if not typed(ctx, name) and typed(parent, name):
            return parent.params[name]
        return own

    return pick("url", url), pick("api_key", api_key)


def fail(e: FitserveError, api_key: str | None) -> NoReturn:
    """End the command with the API's error and its hint, on stderr, status 1."""
    message, hint = e.message, e.hint
    if e.status == 401 and not api_key:
        message = "this server needs an API key: pass --api-key or set FITSERVE_API_KEY"
        hint = hint or "whoever runs the server creates one: fitserve keys create --tenant NAME"
    elif e.status == 401:
        hint = hint or "check the key given with --api-key or FITSERVE_API_KEY"
    typer.echo(f"error: {e.type}: {message}", err=True)
    if hint:
        typer.echo(f"hint: {hint}", err=True)
    raise typer.Exit(1)


@contextmanager
def connect(ctx: typer.Context | None, url: str, api_key: str | None) -> Iterator[Client]:
    """A client whose failures end the command with the API's message and hint on stderr."""
    import httpx

    url, api_key = endpoint(ctx, url, api_key)
    try:
        with Client(url, api_key=api_key) as client:
            yield client
    except FitserveError as e:
        fail(e, api_key)
    except httpx.TransportError as e:
        typer.echo(f"error: cannot reach the server at {url}: {e}", err=True)
        raise typer.Exit(1) from None


def fmt(values: Any) -> str:
    """Numbers as the seed program prints them, lists kept as lists."""
    if isinstance(values, list):
        return "[" + ", ".join(fmt(v) for v in values) + "]"
    return "null" if values is None else f"{values:.6g}"


def when(stamp: str | None) -> str:
    """An API timestamp as ``2025-12-02 07:34:00`` (UTC), or ``-``."""
    return stamp[:19].replace("T", " ") if stamp else "-"


def short_when(stamp: str) -> str:
    """``12-02 07:34``: a table's created column (UTC)."""
    return stamp[5:16].replace("T", " ")


def line(label: str, value: Any) -> None:
    """One ``label  value`` line of a show command (stdout)."""
    typer.echo(f"{label:<12}{value}")


def job_ended_badly(job: dict[str, Any]) -> NoReturn:
    """A job that did not succeed: its error and the hint that comes with it, status 1."""
    err = job.get("error") or {}
    typer.echo(f"job {job['id']} {job['status']}: {err.get('type', '')}: "
               f"{err.get('message', '')}", err=True)
    if err.get("hint"):
        typer.echo(f"hint: {err['hint']}", err=True)
    raise typer.Exit(1)


DataArgument = Annotated[Path | None, typer.Argument(
    exists=True, dir_okay=False, readable=True,
    help="CSV file with a header row (or give --dataset).")]
TargetOption = Annotated[list[str] | None, typer.Option(
    "--target", "-t", help="Target column of the CSV (repeat for several).")]


def check_data(data: Path | None, dataset: str | None, target: list[str] | None) -> None:
    """A CSV file (naming its target) or a stored dataset's id: one of the two."""
    if (data is None) == (dataset is None):
        raise typer.BadParameter("give a CSV file, or --dataset ID, not both",
                                 param_hint="DATA")
    if data is not None and not target:
        raise typer.BadParameter("name the CSV's target column: --target y",
                                 param_hint="--target")


def train(
    ctx: typer.Context,
    data: DataArgument = None,
    target: TargetOption = None,
    feature: Annotated[list[str] | None, typer.Option(
        "--feature", "-f", help="Feature column (repeat; default: all but the targets).")
    ] = None,
    dataset: str | None = typer.Option(None, "--dataset", "-d",
                                       help="Train on a stored dataset (its id) instead."),
    epochs: int | None = typer.Option(None, help="Epochs (default 10000)."),
    lr: float | None = typer.Option(None, help="Learning rate (default 0.01 for sgd)."),
    optimizer: str | None = typer.Option(None, help="sgd, adam, adamw or rmsprop."),
    batch_size: int | None = typer.Option(None, help="Mini-batch size (default: full batch)."),
    seed: int | None = typer.Option(None, help="Seed, for a reproducible run."),
    validation_fraction: float | None = typer.Option(None, help="Rows held out (0 to 0.5)."),
    device: str | None = typer.Option(None, help="cpu, cuda, cuda:N, mps or auto."),
    model_name: str | None = typer.Option(None, "--model-name", "--name",
                                          help="Name the model; each run adds a version."),
    kind: str | None = typer.Option(None, help="linear, logistic, polynomial or mlp."),
    degree: int | None = typer.Option(None, help="Polynomial degree (--kind polynomial)."),
    hidden: str | None = typer.Option(None, help="Hidden sizes, e.g. 32,32 (--kind mlp)."),
    loss: str | None = typer.Option(None, help="mse, l1, huber, bce or cross_entropy."),
    standardize: bool = typer.Option(False, help="Scale inputs (and targets) to unit variance."),
    patience: int | None = typer.Option(None, help="Early stopping after N epochs without a "
                                        "better validation loss (needs a validation split)."),
    url: str = URL,
    api_key: str | None = API_KEY,
) -> None:
    """Upload a CSV (or use --dataset), train with a live progress bar, print the fit."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    check_data(data, dataset, target)
    spec = {k: v for k, v in {
        "epochs": epochs, "lr": lr, "optimizer": optimizer, "batch_size": batch_size,
        "seed": seed, "validation_fraction": validation_fraction, "device": device,
        "model_name": model_name, "loss": loss,
        "early_stopping": {"patience": patience} if patience is not None else None,
        "standardize": standardize or None,
    }.items() if v is not None}
    if kind is not None or degree is not None or hidden is not None:
        model: dict[str, Any] = {"kind": kind or ("polynomial" if degree else "mlp")}
        if degree is not None:
            model["degree"] = degree
        if hidden is not None:
            model["hidden"] = [int(h) for h in hidden.split(",") if h.strip()]
        spec["model"] = model
    with connect(ctx, url, api_key) as client:
        if data is not None:
            dataset = client.upload_csv(data, target or [], features=feature or None,
                                        name=data.stem)["id"]
        job = client.submit(dataset_id=dataset, **spec)
        if standardize:  # the bar's numbers and the last line's differ by the targets' scale
            typer.echo(STANDARDIZED_NOTE, err=True)
        columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn())
        with Progress(*columns, console=Console(stderr=True)) as progress:
            bar = progress.add_task("training", total=job["progress"]["epochs"], loss="-")

            def show(p: dict[str, Any]) -> None:
                progress.update(bar, completed=p["epoch"], loss=fmt(p["loss"]))

            job = client.wait(job["id"], on_progress=show)
            progress.update(bar, completed=job["progress"]["epoch"],
                            loss=fmt(job["progress"]["loss"]))
        if job["status"] != "succeeded":
            job_ended_badly(job)
        model = client.model(job["model_id"])
    label = f" ({model['name']} v{model['version']})" if model["name"] else ""
    typer.echo(f"model       {model['id']}{label}")
    if model["weight"] is not None:
        typer.echo(f"weight      {fmt(model['weight'])}")
        typer.echo(f"bias        {fmt(model['bias'])}")
    else:
        sizes = {k: shape(v) for k, v in (model.get("parameters") or {}).items()}
        typer.echo(f"parameters  {sizes}")
    units = "  (the data's units)" if standardize else ""
    typer.echo(f"final loss  {fmt(model['metrics']['train_loss'])}{units}")
    if model["metrics"].get("accuracy") is not None:
        typer.echo(f"accuracy    {fmt(model['metrics']['accuracy'])}")
    if job.get("stopped_early"):
        typer.echo(f"stopped     {job['stopped_early']['message']}")
    if model["metrics"].get("val_loss") is not None:
        typer.echo(f"val loss    {fmt(model['metrics']['val_loss'])}{units}")


def _row(value: str) -> list[float]:
    try:
        return [float(v) for v in value.split(",")]
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a row of numbers (use 3.3 or 1,2)",
                                 param_hint="ROWS") from None


def predict(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Model id or name (its latest version).")],
    rows: Annotated[list[str], typer.Argument(
        help="One row each: 3.3, or 1.5,2 for two features.")],
    url: str = URL,
    api_key: str | None = API_KEY,
) -> None:
    """Predict y for rows: `fitserve predict seed 3.3 4.4` (one row per value)."""
    x = [_row(r) for r in rows]
    with connect(ctx, url, api_key) as client:
        answer = client.predict(x, model=model)
    label = f" ({answer['model_name']} v{answer['version']})" if answer["model_name"] else ""
    typer.echo(f"model {answer['model_id']}{label}", err=True)
    for xi, yi in zip(x, answer["y"], strict=True):
        typer.echo(f"{fmt(xi)} -> {fmt(yi)}")


PREDICT_SETTINGS = {"ignore_unknown_options": True}
"""Rows such as -1.5 are numbers, not options."""


def register(cli: typer.Typer) -> None:
    from service.cli.datasets import datasets
    from service.cli.jobs import jobs
    from service.cli.models import models

    commands: list[tuple[Callable[..., None], dict[str, Any]]] = [
        (train, {}),
        (predict, {"context_settings": PREDICT_SETTINGS}),
    ]
    for fn, extra in commands:
        cli.command(**extra)(fn)
    cli.add_typer(datasets, name="datasets")
    cli.add_typer(jobs, name="jobs")
    cli.add_typer(models, name="models")


def shape(value: Any) -> list[int]:
    """The shape of nested lists (a tensor as JSON), without numpy in the client."""
    sizes = []
    while isinstance(value, list):
        sizes.append(len(value))
        value = value[0] if value else None
    return sizes
