"""``fitserve models``: list (the default), show, predict, plot (to a PNG file), delete."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from service.cli.client import (
    API_KEY,
    PREDICT_SETTINGS,
    URL,
    connect,
    fmt,
    line,
    predict,
    shape,
    short_when,
    when,
)
from service.cli.tables import Column, print_table

models = typer.Typer(help="Fitted models: list (the default), show, predict, plot, delete.")

ModelId = Annotated[str, typer.Argument(help="The model's id (mdl_...).")]
NAME = typer.Option(None, help="Only versions of this name.")
LIMIT = typer.Option(20, min=1, max=500, help="How many, newest first.")

_COLUMNS = [
    Column("id", id=True), Column("name", max_width=24, drop=2),
    Column("weight", max_width=22, drop=3), Column("bias", max_width=14, drop=4),
    Column("train loss", max_width=12, drop=1), Column("kind", drop=5),
    Column("created", drop=6),
]


@models.callback(invoke_without_command=True)
def _models(
    ctx: typer.Context, name: str | None = NAME, limit: int = LIMIT, url: str = URL,
    api_key: str | None = API_KEY,
) -> None:
    """Fitted models: `fitserve models` lists them, newest first."""
    if ctx.invoked_subcommand is None:
        list_models(ctx, name, limit, url, api_key)


@models.command("list")
def list_models(
    ctx: typer.Context, name: str | None = NAME, limit: int = LIMIT, url: str = URL,
    api_key: str | None = API_KEY,
) -> None:
    """List models, newest first, with weight and bias (ids in full)."""
    with connect(ctx, url, api_key) as client:
        data = client.models(name=name, limit=limit)
    print_table("models", _COLUMNS, [
        [m["id"], f"{m['name']} v{m['version']}" if m["name"] else "",
         "" if m["weight"] is None else fmt(m["weight"]),
         "" if m["bias"] is None else fmt(m["bias"]), fmt(m["metrics"]["train_loss"]),
         m["kind"], short_when(m["created_at"])]
        for m in data
    ])


@models.command("show")
def show(ctx: typer.Context, model_id: ModelId,
         as_json: bool = typer.Option(False, "--json", help="The model as the API answers it."),
         url: str = URL, api_key: str | None = API_KEY) -> None:
    """A model's weight and bias (or its tensors' shapes), metrics and lineage."""
    with connect(ctx, url, api_key) as client:
        m = client.model(model_id)
    if as_json:
        import json

        typer.echo(json.dumps(m, indent=2))
        return
    line("model", m["id"] + (f" ({m['name']} v{m['version']})" if m["name"] else ""))
    line("kind", f"{m['kind']} ({m['task']})")
    line("features", ", ".join(m["feature_names"]))
    line("targets", ", ".join(m["target_names"]))
    if m["weight"] is not None:
        line("weight", fmt(m["weight"]))
        line("bias", fmt(m["bias"]))
    elif m.get("parameters"):
        line("parameters", {k: shape(v) for k, v in m["parameters"].items()})
    for key, label in (("train_loss", "train loss"), ("val_loss", "val loss"), ("r2", "r2"),
                       ("accuracy", "accuracy")):
        if m["metrics"].get(key) is not None:
            line(label, fmt(m["metrics"][key]))
    if m.get("imported"):  # no job or dataset here: where the file came from
        line("imported", f"sha256 {m['imported']['sha256']}")
    else:
        line("job", m["job_id"])
        line("dataset", m["dataset_id"])
    if m.get("parent_model_id"):
        line("parent", m["parent_model_id"])  # a warm start began from it
    line("created", when(m["created_at"]))
    if m.get("checkpoint_error"):
        line("checkpoint", m["checkpoint_error"])


models.command("predict", context_settings=PREDICT_SETTINGS)(predict)


@models.command("plot")
def plot(
    ctx: typer.Context, model_id: ModelId,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", dir_okay=False, help="The PNG file (default: <model id>.png).")
    ] = None,
    url: str = URL, api_key: str | None = API_KEY,
) -> None:
    """Write the data and the fitted line (or predicted against actual) to a PNG file."""
    with connect(ctx, url, api_key) as client:
        png = client.model_plot(model_id)
    path = output or Path(f"{model_id}.png")
    path.write_bytes(png)
    typer.echo(str(path))


@models.command("delete")
def delete(ctx: typer.Context, model_id: ModelId, url: str = URL,
           api_key: str | None = API_KEY) -> None:
    """Delete a model: its checkpoint and its version of its name."""
    with connect(ctx, url, api_key) as client:
        client.delete_model(model_id)
    typer.echo(f"deleted {model_id}")
