"""The ``security:`` section: encryption at rest of everything a run writes that holds data or weights."""

from __future__ import annotations

from pydantic import Field, model_validator

from tuneforge.config._types import Section as _Section


class SecurityConfig(_Section):
    """Encryption at rest (AES-256-GCM). The config names where the key is, never the key itself.

    With none of ``key_file``, ``key_env``, ``passphrase_env`` set, the key comes from the environment
    variables ``TUNEFORGE_KEY_FILE``, ``TUNEFORGE_KEY`` or ``TUNEFORGE_PASSPHRASE`` (the first one set).
    """

    encrypt: bool = Field(False, description="Encrypt the run's data files, eval files and weights on disk.")
    key_file: str | None = Field(None, description="A key file made by `tuneforge genkey FILE` (must be mode 0600).")
    key_env: str | None = Field(None, description="Environment variable holding the key (base64 of 32 bytes).")
    passphrase_env: str | None = Field(None, description="Environment variable holding a passphrase (stretched by scrypt).")

    @model_validator(mode="after")
    def _one_source(self) -> "SecurityConfig":
        given = [k for k in ("key_file", "key_env", "passphrase_env") if getattr(self, k)]
        if len(given) > 1:
            raise ValueError(f"give one key source, not {' and '.join(given)}")
        return self
