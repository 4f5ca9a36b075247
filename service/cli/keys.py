"""``fitserve keys create | list | revoke``: API keys, managed on the metadata store."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:  # imported where used: the client-only install has no server modules
    from service.auth.keys import Authenticator

keys = typer.Typer(help="API keys: create (shown once), list, revoke.", no_args_is_help=True)


def _auth() -> Authenticator:
    from service.auth.keys import Authenticator
    from service.config import Settings
    from service.store.metadata import MetadataStore

    settings = Settings()
    settings.ensure_dirs()
    meta = MetadataStore(settings.resolved_database_url)
    meta.create_schema()
    return Authenticator(settings, meta)


@keys.command("create")
def create(
    tenant: str = typer.Option(..., help="The tenant the key acts for."),
    scope: str = typer.Option("train", help="predict | train | admin"),
    name: str | None = typer.Option(None, help="A note to tell keys apart."),
) -> None:
    """Create a key and print it once (only its hash is stored)."""
    from service.auth.keys import SCOPES

    if scope not in SCOPES:
        typer.echo(f"scope must be one of {', '.join(SCOPES)}", err=True)
        raise typer.Exit(2)
    key_id, key = _auth().create(tenant, scope, name)
    typer.echo(f"key id: {key_id}  tenant: {tenant}  scope: {scope}", err=True)
    typer.echo("store this key now; it cannot be shown again:", err=True)
    typer.echo(key)


@keys.command("list")
def list_keys() -> None:
    """List keys (id, tenant, scope, prefix, created, revoked); never the keys."""
    for row in _auth().keys.all():
        revoked = row.revoked_at.isoformat() if row.revoked_at else "-"
        typer.echo(f"{row.id}  {row.tenant}  {row.scope}  {row.prefix}...  "
                   f"{row.created_at.isoformat()}  revoked: {revoked}  {row.name or ''}")


@keys.command("revoke")
def revoke(key_id: str = typer.Argument(..., help="The key id (from `keys list`).")) -> None:
    """Revoke a key; requests with it fail within a few seconds."""
    if not _auth().keys.revoke(key_id):
        typer.echo(f"no active key {key_id!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {key_id}")
