"""Security: API keys for serving and safe model loading (pickle-free weights, pinned digests, no stray code)."""

from tuneforge.security.keys import (
    KeyRecord, KeyStore, create_key, hash_key, list_keys, parse_expiry, read_keys, revoke_key, write_keys,
)

__all__ = [
    "KeyRecord", "KeyStore", "create_key", "hash_key", "list_keys", "parse_expiry", "read_keys", "revoke_key",
    "write_keys",
]
