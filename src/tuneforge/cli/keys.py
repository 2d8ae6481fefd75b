"""``tuneforge keys create|list|revoke``: manage the API keys ``tuneforge serve`` accepts."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(name="keys", no_args_is_help=True, help="Create, list and revoke API keys for `tuneforge serve`.")

_FILE = typer.Option(..., "--file", "-f", help="The keys file (JSON, mode 0600; holds hashes, never keys).")


@app.command("create")
def create(
    name: str = typer.Argument(..., help="A name for the key (who or what uses it); shown in access logs."),
    file: Path = _FILE,
) -> None:
    """Create a key, print it once, and store only its hash."""
    from tuneforge.security import create_key

    key = create_key(file, name)
    typer.echo(key)
    typer.echo(f"stored the hash of key {name!r} in {file}; copy the key now, it is not shown again", err=True)


@app.command("list")
def list_(file: Path = _FILE) -> None:
    """List key names and creation times."""
    from tuneforge.security import list_keys

    records = list_keys(file)
    if not records:
        typer.echo(f"no keys in {file}", err=True)
    for record in records:
        typer.echo(f"{record.name}\t{record.created}")


@app.command("revoke")
def revoke(
    name: str = typer.Argument(..., help="Name of the key to revoke."),
    file: Path = _FILE,
) -> None:
    """Revoke a key; running servers refuse it from their next request."""
    from tuneforge.security import revoke_key

    revoke_key(file, name)
    typer.echo(f"revoked key {name!r}", err=True)
