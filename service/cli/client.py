"""``fitserve train | predict | jobs | models``: the API from a shell, through service.client.

The server is ``--url``, else ``FITSERVE_URL``, else http://127.0.0.1:8000. Results go to
stdout, the progress bar and errors to stderr.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from service.client import DEFAULT_URL, Client, FitserveError

URL = typer.Option(DEFAULT_URL, "--url", envvar="FITSERVE_URL", show_envvar=True,
                   help="The fitserve server.")
API_KEY = typer.Option(None, "--api-key", envvar="FITSERVE_API_KEY", show_envvar=True,
                       help="API key, when the server has authentication on.")


@contextmanager
def _client(url: str, api_key: str | None) -> Iterator[Client]:
    """A client whose failures end the command with one line on stderr and status 1."""
    import httpx

    try:
        with Client(url, api_key=api_key) as client:
            yield client
    except FitserveError as e:
        typer.echo(f"error: {e.type}: {e.message}", err=True)
        raise typer.Exit(1) from None
    except httpx.TransportError as e:
        typer.echo(f"error: cannot reach the server at {url}: {e}", err=True)
        raise typer.Exit(1) from None


def _fmt(values: Any) -> str:
    """Numbers as the seed program prints them, lists kept as lists."""
    if isinstance(values, list):
        return "[" + ", ".join(_fmt(v) for v in values) + "]"
    return "null" if values is None else f"{values:.6g}"


def train(
    data: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True,
                                         help="CSV file with a header row.")],
    target: Annotated[list[str], typer.Option("--target", "-t",
                                              help="Target column (repeat for several).")],
    feature: Annotated[list[str] | None, typer.Option(
        "--feature", "-f", help="Feature column (repeat; default: all but the targets).")
    ] = None,
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
    """Upload a CSV, train on it with a live progress bar, print weight, bias and loss."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

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
    with _client(url, api_key) as client:
        dataset = client.upload_csv(data, target, features=feature or None, name=data.stem)
        job = client.submit(dataset_id=dataset["id"], **spec)
        columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn())
        with Progress(*columns, console=Console(stderr=True)) as progress:
            bar = progress.add_task("training", total=job["progress"]["epochs"], loss="-")

            def show(p: dict[str, Any]) -> None:
                progress.update(bar, completed=p["epoch"], loss=_fmt(p["loss"]))

            job = client.wait(job["id"], on_progress=show)
            progress.update(bar, completed=job["progress"]["epoch"],
                            loss=_fmt(job["progress"]["loss"]))
        if job["status"] != "succeeded":
            err = job.get("error") or {}
            typer.echo(f"job {job['id']} {job['status']}: {err.get('type', '')}: "
                       f"{err.get('message', '')}", err=True)
            raise typer.Exit(1)
        model = client.model(job["model_id"])
    label = f" ({model['name']} v{model['version']})" if model["name"] else ""
    typer.echo(f"model       {model['id']}{label}")
    if model["weight"] is not None:
        typer.echo(f"weight      {_fmt(model['weight'])}")
        typer.echo(f"bias        {_fmt(model['bias'])}")
    else:
        sizes = {k: _shape(v) for k, v in (model.get("parameters") or {}).items()}
        typer.echo(f"parameters  {sizes}")
    typer.echo(f"final loss  {_fmt(model['metrics']['train_loss'])}")
    if model["metrics"].get("accuracy") is not None:
        typer.echo(f"accuracy    {_fmt(model['metrics']['accuracy'])}")
    if job.get("stopped_early"):
        typer.echo(f"stopped     {job['stopped_early']['message']}")
    if model["metrics"].get("val_loss") is not None:
        typer.echo(f"val loss    {_fmt(model['metrics']['val_loss'])}")


def _row(value: str) -> list[float]:
    try:
        return [float(v) for v in value.split(",")]
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a row of numbers (use 3.3 or 1,2)",
                                 param_hint="ROWS") from None


def predict(
    model: Annotated[str, typer.Argument(help="Model id or name (its latest version).")],
    rows: Annotated[list[str], typer.Argument(
        help="One row each: 3.3, or 1.5,2 for two features.")],
    url: str = URL,
    api_key: str | None = API_KEY,
) -> None:
    """Predict y for rows: `fitserve predict seed 3.3 4.4` (one row per value)."""
    x = [_row(r) for r in rows]
    with _client(url, api_key) as client:
        answer = client.predict(x, model=model)
    label = f" ({answer['model_name']} v{answer['version']})" if answer["model_name"] else ""
    typer.echo(f"model {answer['model_id']}{label}", err=True)
    for xi, yi in zip(x, answer["y"], strict=True):
        typer.echo(f"{_fmt(xi)} -> {_fmt(yi)}")


def _table(title: str, headers: list[str], rows: list[list[str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for h in headers:
        table.add_column(h, overflow="fold")
    for r in rows:
        table.add_row(*r)
    Console().print(table)


def jobs(
    status: str | None = typer.Option(None, help="Only jobs in this status."),
    limit: int = typer.Option(20, min=1, max=500),
    url: str = URL,
    api_key: str | None = API_KEY,
) -> None:
    """List jobs, newest first."""
    with _client(url, api_key) as client:
        data = client.jobs(status=status, limit=limit)
    _table("jobs", ["id", "status", "epoch", "loss", "model", "created"], [
        [j["id"], j["status"], f"{j['progress']['epoch']}/{j['progress']['epochs']}",
         _fmt(j["progress"]["loss"]), j["model_id"] or "", j["created_at"][:19]]
        for j in data
    ])


def models(
    name: str | None = typer.Option(None, help="Only versions of this name."),
    limit: int = typer.Option(20, min=1, max=500),
    url: str = URL,
    api_key: str | None = API_KEY,
) -> None:
    """List models, newest first, with weight and bias."""
    with _client(url, api_key) as client:
        data = client.models(name=name, limit=limit)
    _table("models", ["id", "name", "weight", "bias", "train loss"], [
        [m["id"], f"{m['name']} v{m['version']}" if m["name"] else "", _fmt(m["weight"]),
         _fmt(m["bias"]), _fmt(m["metrics"]["train_loss"])]
        for m in data
    ])


def register(cli: typer.Typer) -> None:
    commands: list[tuple[Callable[..., None], dict[str, Any]]] = [
        (train, {}),
        # rows such as -1.5 are numbers, not options
        (predict, {"context_settings": {"ignore_unknown_options": True}}),
        (jobs, {}),
        (models, {}),
    ]
    for fn, extra in commands:
        cli.command(**extra)(fn)


def _shape(value: Any) -> list[int]:
    """The shape of nested lists (a tensor as JSON), without numpy in the client."""
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        value = value[0] if value else None
    return shape
