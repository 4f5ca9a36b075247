"""``fitserve datasets``: list (the default), upload (CSV or JSON), show, delete."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from service.cli.client import API_KEY, URL, connect, fmt, line, short_when, when
from service.cli.tables import Column, print_table

datasets = typer.Typer(help="Datasets: list (the default), upload, show, delete.")

DatasetId = Annotated[str, typer.Argument(help="The dataset's id (ds_...).")]
LIMIT = typer.Option(20, min=1, max=500, help="How many, newest first.")

_COLUMNS = [
    Column("id", id=True), Column("name", max_width=20, drop=3), Column("rows"),
    Column("features", drop=2), Column("targets", drop=1), Column("created", drop=4),
]


@datasets.callback(invoke_without_command=True)
def _datasets(ctx: typer.Context, limit: int = LIMIT, url: str = URL,
              api_key: str | None = API_KEY) -> None:
    """Datasets: `fitserve datasets` lists them, newest first."""
    if ctx.invoked_subcommand is None:
        list_datasets(ctx, limit, url, api_key)


@datasets.command("list")
def list_datasets(ctx: typer.Context, limit: int = LIMIT, url: str = URL,
                  api_key: str | None = API_KEY) -> None:
    """List datasets, newest first (ids in full)."""
    with connect(ctx, url, api_key) as client:
        data = client.datasets(limit=limit)
    print_table("datasets", _COLUMNS, [
        [d["id"], d["name"] or "", str(d["rows"]), str(d["features"]), str(d["targets"]),
         short_when(d["created_at"])]
        for d in data
    ])


def _print(d: dict[str, Any]) -> None:
    line("dataset", d["id"] + (f" ({d['name']})" if d["name"] else ""))
    line("rows", d["rows"])
    line("features", ", ".join(d["feature_names"]))
    line("targets", ", ".join(d["target_names"]))
    line("sha256", d["sha256"])
    line("size", f"{d['size_bytes']} bytes")
    line("created", when(d["created_at"]))


@datasets.command("upload")
def upload(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(
        exists=True, dir_okay=False, readable=True,
        help='A CSV file with a header row, or a .json file {"x": [[...]], "y": [[...]]}.')],
    target: Annotated[list[str] | None, typer.Option(
        "--target", "-t", help="CSV: the target column (repeat for several).")] = None,
    feature: Annotated[list[str] | None, typer.Option(
        "--feature", "-f", help="CSV: a feature column (repeat; default: all but the "
        "targets).")] = None,
    name: str | None = typer.Option(None, help="A name (default: the file's name)."),
    url: str = URL,
    api_key: str | None = API_KEY,
) -> None:
    """Store a dataset; the same content twice gives the stored one back. Prints its id."""
    import json

    body: dict[str, Any] | None = None
    if path.suffix.lower() == ".json":
        try:
            body = json.loads(path.read_bytes())
        except ValueError as e:
            raise typer.BadParameter(f"{path} is not JSON: {e}", param_hint="PATH") from None
        if not isinstance(body, dict):
            raise typer.BadParameter(f'{path} must hold {{"x": [[...]], "y": [[...]]}}',
                                     param_hint="PATH")
    elif not target:
        raise typer.BadParameter("name the CSV's target column: --target y",
                                 param_hint="--target")
    with connect(ctx, url, api_key) as client:
        if body is not None:
            d = client.upload(body.get("x"), body.get("y"),
                              name=name or body.get("name") or path.stem,
                              feature_names=body.get("feature_names"),
                              target_names=body.get("target_names"))
        else:
            d = client.upload_csv(path, target or [], features=feature or None,
                                  name=name or path.stem)
    _print(d)


@datasets.command("show")
def show(ctx: typer.Context, dataset_id: DatasetId, url: str = URL,
         api_key: str | None = API_KEY) -> None:
    """A dataset's shape, column names, checksum and per-column statistics."""
    with connect(ctx, url, api_key) as client:
        d = client.dataset(dataset_id)
    _print(d)
    stats = [Column("column", max_width=24), Column("role"), Column("mean", max_width=12),
             Column("std", max_width=12), Column("min", max_width=12),
             Column("max", max_width=12)]
    print_table("", stats, [[c["name"], c["role"], fmt(c["mean"]), fmt(c["std"]),
                             fmt(c["min"]), fmt(c["max"])] for c in d["columns"]])


@datasets.command("delete")
def delete(ctx: typer.Context, dataset_id: DatasetId, url: str = URL,
           api_key: str | None = API_KEY) -> None:
    """Delete a dataset (refused while a queued or running job uses it)."""
    with connect(ctx, url, api_key) as client:
        client.delete_dataset(dataset_id)
    typer.echo(f"deleted {dataset_id}")
