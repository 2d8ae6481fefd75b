"""Where the encryption key comes from: CLI options, the run's ``security:`` section, or the environment.

One convention for every command: ``--key-file FILE``, ``--key-env VAR`` or ``--passphrase-env VAR``
first (the command's own options, or the global ones before any command: ``tuneforge --key-file K
eval RUN``); else what the run's config names; else the environment variables ``TUNEFORGE_KEY_FILE``,
``TUNEFORGE_KEY`` (base64 key) or ``TUNEFORGE_PASSPHRASE``, the first one set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from tuneforge.errors import SecurityError
from tuneforge.security.crypto import Key, key_from_env, passphrase_from_env, read_key_file

ENV_KEY_FILE, ENV_KEY, ENV_PASSPHRASE = "TUNEFORGE_KEY_FILE", "TUNEFORGE_KEY", "TUNEFORGE_PASSPHRASE"

_given: "KeySource | None" = None
"""The source the global CLI options name for this command (``tuneforge --key-file K ...``), if any."""


@dataclass(frozen=True)
class KeySource:
    """At most one of a key file, an environment variable holding the key, or one holding a passphrase."""

    key_file: str | None = None
    key_env: str | None = None
    passphrase_env: str | None = None

    @classmethod
    def of(cls, section) -> "KeySource":
        """The key source a ``security:`` section (:class:`tuneforge.config.security.SecurityConfig`) names."""
        return cls(section.key_file, section.key_env, section.passphrase_env)

    def given(self) -> bool:
        return any((self.key_file, self.key_env, self.passphrase_env))

    def load(self) -> Key | None:
        """The key, or None when no source is named (here or in the environment).

        Raises:
            SecurityError: two sources at once, or the named one is missing, unreadable, not private or malformed.
        """
        named = [n for n in ("key_file", "key_env", "passphrase_env") if getattr(self, n)]
        if len(named) > 1:
            raise SecurityError(f"give one key source, not {' and '.join('--' + n.replace('_', '-') for n in named)}")
        if self.key_file:
            return read_key_file(self.key_file)
        if self.key_env:
            return key_from_env(self.key_env)
        if self.passphrase_env:
            return passphrase_from_env(self.passphrase_env)
        if os.environ.get(ENV_KEY_FILE):
            return read_key_file(os.environ[ENV_KEY_FILE])
        if os.environ.get(ENV_KEY):
            return key_from_env(ENV_KEY)
        if os.environ.get(ENV_PASSPHRASE):
            return passphrase_from_env(ENV_PASSPHRASE)
        return None

    def require(self, what: str) -> Key:
        key = self.load()
        if key is None:
            from tuneforge.security.crypto import KEY_HELP

            raise SecurityError(f"{what} needs an encryption key; {KEY_HELP}")
        return key

    def or_else(self, fallback: "KeySource") -> "KeySource":
        """This source when it names one, else ``fallback`` (CLI options before the run's config)."""
        return self if self.given() else fallback


def give(source: "KeySource | None") -> None:
    """Name the key source for every run this process reads (the global CLI options); None forgets it."""
    global _given
    _given = source if source is not None and source.given() else None


def run_key_source(section: dict) -> KeySource:
    """The key source for a run whose stored ``security:`` section is ``section``: the given one first."""
    if _given is not None:
        return _given
    return KeySource(section.get("key_file"), section.get("key_env"), section.get("passphrase_env"))
