"""Options several commands share, defined once so their flag names and help stay the same everywhere."""

from __future__ import annotations

import typer

TRUST_REMOTE_CODE_HELP = (
    "Run Python code shipped with the model (its config.json auto_map). Off by default and never taken from a "
    "run's config.yaml: that code runs with your rights, so read it first."
)


def trust_remote_code_option() -> bool:
    return typer.Option(False, "--trust-remote-code", help=TRUST_REMOTE_CODE_HELP)


def overwrite_option() -> bool:
    return typer.Option(
        False, "--overwrite", help="Replace an existing output folder that tuneforge did not write (no .tuneforge marker)."
    )


def warn_trust_remote_code(trust: bool, target: object) -> None:
    """Say loudly that custom code may run, on stderr, before anything loads."""
    if trust:
        typer.secho(
            f"warning: --trust-remote-code: Python code shipped with the model behind {target} may run on this machine",
            fg=typer.colors.YELLOW, err=True,
        )


# Encryption keys: the same three options on every command that writes or reads encrypted files.
def key_file_option() -> str | None:
    return typer.Option(None, "--key-file", help="Encryption key file (from `tuneforge genkey`, mode 0600). "
                        "Default: the run's security section, else TUNEFORGE_KEY_FILE / TUNEFORGE_KEY / TUNEFORGE_PASSPHRASE.")


def key_env_option() -> str | None:
    return typer.Option(None, "--key-env", help="Environment variable holding the encryption key (base64).")


def passphrase_env_option() -> str | None:
    return typer.Option(None, "--passphrase-env", help="Environment variable holding the encryption passphrase.")
