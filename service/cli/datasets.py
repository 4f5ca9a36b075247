"""``fitserve datasets``: list (the default), upload (CSV, Parquet, Arrow, NDJSON or JSON),
show, delete."""

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
        help='A CSV file with a header row, a .parquet, .arrow/.arrows, .feather or .ndjson '
        'file, or a .json file {"x": [[...]], "y": [[...]]}.')],
    target: Annotated[list[str] | None, typer.Option(
        "--target", "-t", help="The target column (repeat for several).")] = None,
    feature: Annotated[list[str] | None, typer.Option(
        "--feature", "-f", help="A feature column (repeat; default: all but the "
        "targets).")] = None,
    schema: Annotated[list[str] | None, typer.Option(
        "--schema", "-s", help="A column's type, overriding the inferred one: zip:categorical "
        "(repeat; types: numeric, categorical, boolean).")] = None,
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
        raise typer.BadParameter("name the target column: --target y",
                                 param_hint="--target")
    types: dict[str, str] = {}
    for item in schema or []:
        for part in item.split(","):
            column, sep, kind = part.rpartition(":")
            if not sep or not column:
                raise typer.BadParameter(f"{part!r} is not name:type (zip:categorical)",
                                         param_hint="--schema")
            types[column] = kind
    with connect(ctx, url, api_key) as client:
        if body is not None:
            d = client.upload(body.get("x"), body.get("y"),
                              name=name or body.get("name") or path.stem,
                              feature_names=body.get("feature_names"),
                              target_names=body.get("target_names"))
        elif path.suffix.lower() == ".csv" and not types:
            d = client.upload_csv(path, target or [], features=feature or None,
                                  name=name or path.stem)
        else:
            try:
                d = client.upload_table(path, target or [], features=feature or None,
                                        name=name or path.stem, schema=types or None)
            except ValueError as e:  # an extension no reader takes
                raise typer.BadParameter(str(e), param_hint="PATH") from None
    _print(d)


@datasets.command("show")
def show(ctx: typer.Context, dataset_id: DatasetId, url: str = URL,
         api_key: str | None = API_KEY) -> None:
    """A dataset's shape, column names, checksum and per-column statistics."""
    with connect(ctx, url, api_key) as client:
        d = client.dataset(dataset_id)
    _print(d)
    stats = [Column("column", max_width=24), Column("role"), Column("type"),
             Column("missing"), Column("mean", max_width=12), Column("std", max_width=12),
             Column("min", max_width=12), Column("max", max_width=12),
             Column("most frequent", max_width=40, drop=1)]
    print_table("", stats, [[c["name"], c["role"], c.get("type", "numeric"),
                             str(c.get("missing", 0)), *_numbers(c), _top(c)]
                            for c in d["columns"]])


def _numbers(c: dict[str, Any]) -> list[str]:
    return ["" if c.get(k) is None else fmt(c[k]) for k in ("mean", "std", "min", "max")]


def _top(c: dict[str, Any]) -> str:
    """A categorical column's distinct count and most frequent values."""
    if not c.get("top"):
        return ""
    return f"{c['distinct']}: " + ", ".join(f"{t['value']} ({t['count']})" for t in c["top"])


@datasets.command("delete")
def delete(ctx: typer.Context, dataset_id: DatasetId, url: str = URL,
           api_key: str | None = API_KEY) -> None:
    """Delete a dataset (refused while a queued or running job uses it)."""
    with connect(ctx, url, api_key) as client:
        client.delete_dataset(dataset_id)
    typer.echo(f"deleted {dataset_id}")
