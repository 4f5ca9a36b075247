"""``fitserve alias set | delete | list | history`` and ``fitserve traffic set | show |
clear``: a model name's aliases, who moved them when, and how predict by the name splits its
traffic."""

from __future__ import annotations

from typing import Annotated

import typer

from service.cli.client import API_KEY, URL, connect, line, when

alias = typer.Typer(help="A model name's aliases: set, delete, list, history.",
                    no_args_is_help=True)
traffic = typer.Typer(help="A model name's traffic split: set, show, clear.",
                      no_args_is_help=True)

Name = Annotated[str, typer.Argument(help="The model name.")]
Alias = Annotated[str, typer.Argument(help="The alias (champion): not latest, not a number.")]


@alias.command("set")
def set_alias(
    ctx: typer.Context, name: Name, alias_name: Alias,
    version: Annotated[int, typer.Argument(min=1, help="The version it points at.")],
    url: str = URL, api_key: str | None = API_KEY,
) -> None:
    """Point an alias at a version (predict answers from it at once)."""
    with connect(ctx, url, api_key) as client:
        a = client.set_alias(name, alias_name, version)
    before = a["previous_version"]
    moved = "new" if before is None else f"was {before}"
    typer.echo(f"{name}@{a['alias']} -> {a['version']} ({a['model_id']}; {moved})")


@alias.command("delete")
def delete_alias(ctx: typer.Context, name: Name, alias_name: Alias,
                 url: str = URL, api_key: str | None = API_KEY) -> None:
    """Remove an alias (refused while the traffic split routes to it)."""
    with connect(ctx, url, api_key) as client:
        client.delete_alias(name, alias_name)
    typer.echo(f"deleted {name}@{alias_name}")


@alias.command("list")
def list_aliases(ctx: typer.Context, name: Name,
                 url: str = URL, api_key: str | None = API_KEY) -> None:
    """The name's aliases (latest included), versions and traffic split."""
    with connect(ctx, url, api_key) as client:
        view = client.model_name(name)
    ids = {v["version"]: v["model_id"] for v in view["versions"]}
    for a, version in view["aliases"].items():
        line(a, f"{version}  {ids.get(version, '')}")
    line("versions", ", ".join(str(v) for v in ids))
    if view["traffic"]:
        line("traffic", "  ".join(f"{t}={w}" for t, w in view["traffic"].items()))


@alias.command("history")
def history(
    ctx: typer.Context, name: Name,
    limit: Annotated[int, typer.Option(min=1, max=500, help="How many, newest first.")] = 20,
    url: str = URL, api_key: str | None = API_KEY,
) -> None:
    """Every move of the name's aliases, newest first: when, which, from, to, by whom."""
    with connect(ctx, url, api_key) as client:
        moves = client.alias_history(name, limit)
    for m in moves:
        old = "-" if m["from_version"] is None else m["from_version"]
        new = "deleted" if m["to_version"] is None else m["to_version"]
        by = m["key_id"] or "(no key)"
        typer.echo(f"{when(m['moved_at'])}  {m['alias']:<12} {old} -> {new}  "
                   f"{m['tenant']}/{by}")


@traffic.command("set")
def set_traffic(
    ctx: typer.Context, name: Name,
    weights: Annotated[list[str], typer.Argument(
        help="TARGET=PERCENT pairs over aliases or versions, summing to 100: "
        "champion=90 challenger=10")],
    url: str = URL, api_key: str | None = API_KEY,
) -> None:
    """Split predict by the bare name over aliases or versions."""
    split: dict[str, int] = {}
    for pair in weights:
        target, eq, percent = pair.partition("=")
        if not eq or not target or not percent.strip().isdigit():
            raise typer.BadParameter(f"{pair[:40]!r}: write TARGET=PERCENT, e.g. "
                                     "champion=90", param_hint="WEIGHTS")
        split[target] = int(percent)
    with connect(ctx, url, api_key) as client:
        t = client.set_traffic(name, split)
    typer.echo("  ".join(f"{target}={w} (v{t['versions'][target]})"
                         for target, w in t["weights"].items()))


@traffic.command("show")
def show_traffic(ctx: typer.Context, name: Name,
                 url: str = URL, api_key: str | None = API_KEY) -> None:
    """The current split, each target with the version it points at now (as ``traffic set``
    prints it)."""
    with connect(ctx, url, api_key) as client:
        split = client.traffic(name)  # a 404 for a name without versions
    if split is None:
        typer.echo(f"{name} has no traffic split: predict by the name answers from its latest "
                   "version")
        return
    typer.echo("  ".join(f"{target}={w} (v{split['versions'][target]})"
                         for target, w in split["weights"].items()))


@traffic.command("clear")
def clear_traffic(ctx: typer.Context, name: Name,
                  url: str = URL, api_key: str | None = API_KEY) -> None:
    """Remove the split: predict by the name answers from its latest version."""
    with connect(ctx, url, api_key) as client:
        client.clear_traffic(name)
    typer.echo(f"cleared the traffic split of {name}")
