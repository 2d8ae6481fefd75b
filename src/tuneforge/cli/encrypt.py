"""``tuneforge genkey|encrypt|decrypt``: make a key, and encrypt or decrypt one file (e.g. a data file)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from tuneforge.cli.options import key_env_option, key_file_option, passphrase_env_option

_OVERWRITE = typer.Option(False, "--overwrite", help="Replace OUT when it exists.")


def genkey(path: Annotated[Path, typer.Argument(help="Where to write the new key (mode 0600; never replaced).")]) -> int:
    """Make a new random 256-bit encryption key file; keep it apart from the runs it protects."""
    from tuneforge.security import generate_key_file

    key = generate_key_file(path)
    typer.echo(f"key written to {path} (key id {key.id_for()}); a lost key cannot be recovered")
    return 0


def encrypt(
    file: Annotated[Path, typer.Argument(help="The file to encrypt.")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Default: FILE.enc.")] = None,
    overwrite: bool = _OVERWRITE,
    key_file: Optional[str] = key_file_option(),
    key_env: Optional[str] = key_env_option(),
    passphrase_env: Optional[str] = passphrase_env_option(),
) -> int:
    """Encrypt FILE (AES-256-GCM); an encrypted data file can be named in data sources as it is."""
    from tuneforge.security import KeySource, encrypt_file

    key = KeySource(key_file, key_env, passphrase_env).require(f"encrypting {file}")
    out = encrypt_file(file, output or file.with_name(file.name + ".enc"), key, overwrite=overwrite)
    typer.echo(f"encrypted {file} -> {out} (key id {key.id_for()})")
    return 0


def decrypt(
    file: Annotated[Path, typer.Argument(help="A file encrypted by tuneforge.")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Default: FILE without .enc.")] = None,
    overwrite: bool = _OVERWRITE,
    key_file: Optional[str] = key_file_option(),
    key_env: Optional[str] = key_env_option(),
    passphrase_env: Optional[str] = passphrase_env_option(),
) -> int:
    """Decrypt FILE to a plaintext file (mode 0600); nothing is written when the key is wrong or FILE was modified."""
    from tuneforge.errors import SecurityError
    from tuneforge.security import KeySource, decrypt_file

    if output is None:
        if file.suffix != ".enc":
            raise SecurityError(f"{file} has no .enc suffix; name the output with -o OUT")
        output = file.with_suffix("")
    key = KeySource(key_file, key_env, passphrase_env).load()
    out = decrypt_file(file, output, key, overwrite=overwrite)
    typer.echo(f"decrypted {file} -> {out}")
    return 0
