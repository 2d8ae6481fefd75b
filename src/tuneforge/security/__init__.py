"""Security: API keys for serving (more to come: encryption at rest, audit log, safe model loading)."""

from tuneforge.security.keys import (
    KeyRecord, KeyStore, create_key, hash_key, list_keys, read_keys, revoke_key, write_keys,
)

__all__ = ["KeyRecord", "KeyStore", "create_key", "hash_key", "list_keys", "read_keys", "revoke_key", "write_keys"]
