"""``tuneforge keys create|list|revoke``: manage the API keys ``tuneforge serve`` accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(name="keys", no_args_is_help=True, help="Create, list and revoke API keys for `tuneforge serve`.")

_FILE = typer.Option(..., "--file", "-f", help="The keys file (JSON, mode 0600; holds hashes, never keys).")


@app.command("create")
def create(
    name: str = typer.Argument(..., help="A name for the key (who or what uses it); shown in access logs."),
    file: Path = _FILE,
    models: Optional[str] = typer.Option(
        None, "--models", help="Comma-separated served names (models, adapters) the key may call; default all."
    ),
    expires: Optional[str] = typer.Option(
        None, "--expires", help="When the key stops working: 12h, 30d, 8w, or a date such as 2026-12-31 (UTC)."
    ),
    admin: bool = typer.Option(False, "--admin", help="May read /metrics on a server listening beyond loopback."),
) -> None:
    """Create a key, print it once, and store only its hash (with its scopes)."""
    from tuneforge.security import create_key, parse_expiry

    key = create_key(
        file, name, models=models.split(",") if models is not None else None,
        expires=parse_expiry(expires) if expires is not None else None, admin=admin,
    )
    typer.echo(key)
    typer.echo(f"stored the hash of key {name!r} in {file}; copy the key now, it is not shown again", err=True)


@app.command("list")
def list_(file: Path = _FILE) -> None:
    """List key names, creation times and scopes (models, expiry, admin)."""
    from tuneforge.security import list_keys

    records = list_keys(file)
    if not records:
        typer.echo(f"no keys in {file}", err=True)
    for record in records:
        models = ",".join(record.models) if record.models is not None else "all-models"
        scopes = [models, f"expires {record.expires}" if record.expires else "no-expiry"] + (["admin"] if record.admin else [])
        typer.echo(f"{record.name}\t{record.created}\t{' '.join(scopes)}")


@app.command("revoke")
def revoke(
    name: str = typer.Argument(..., help="Name of the key to revoke."),
    file: Path = _FILE,
) -> None:
    """Revoke a key; running servers refuse it from their next request."""
    from tuneforge.security import revoke_key

    revoke_key(file, name)
    typer.echo(f"revoked key {name!r}", err=True)
