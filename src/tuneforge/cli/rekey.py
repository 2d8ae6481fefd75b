"""``tuneforge rekey RUN``: re-encrypt an encrypted run under a new key (key rotation)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from tuneforge.cli.options import key_env_option, key_file_option, passphrase_env_option


def rekey(
    run: Annotated[Path, typer.Argument(help="An encrypted run directory (runs/NAME).")],
    new_key_file: Annotated[Optional[str], typer.Option("--new-key-file", help="The new key file (`tuneforge genkey`).")] = None,
    new_key_env: Annotated[Optional[str], typer.Option("--new-key-env", help="Variable holding the new key.")] = None,
    new_passphrase_env: Annotated[
        Optional[str], typer.Option("--new-passphrase-env", help="Variable holding the new passphrase.")
    ] = None,
    key_file: Optional[str] = key_file_option(),
    key_env: Optional[str] = key_env_option(),
    passphrase_env: Optional[str] = passphrase_env_option(),
) -> int:
    """Re-encrypt every encrypted file of RUN under a new key; the run's config then names the new key.

    The old key is --key-file/--key-env/--passphrase-env, else the one the run's config names.
    """
    from tuneforge.errors import SecurityError
    from tuneforge.security.at_rest import run_security
    from tuneforge.security.key_source import KeySource, run_key_source
    from tuneforge.security.rekey import rekey as rekey_run

    new_source = KeySource(new_key_file, new_key_env, new_passphrase_env)
    if not new_source.given():
        raise SecurityError("give the new key with --new-key-file FILE (or --new-key-env / --new-passphrase-env)")
    section = run_security(run)
    stored = run_key_source(section)
    old = KeySource(key_file, key_env, passphrase_env).or_else(stored).require(f"rekey of {run} (the old key)")
    new = new_source.require("rekey (the new key)")
    result = rekey_run(run, old, new, new_source)
    typer.echo(f"{run}: {len(result.rekeyed)} file(s) re-encrypted under key id {new.id_for()}"
               + (f", {len(result.already)} already were" if result.already else ""))
    return 0
