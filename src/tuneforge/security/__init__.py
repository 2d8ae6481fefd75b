"""Security: API keys for serving, the audit log, and safe model loading (pickle-free weights, pinned digests, no stray code)."""

from tuneforge.security.audit import AuditError, AuditLog, VerifyResult, audited, verify
from tuneforge.security.keys import (
    KeyRecord, KeyStore, create_key, hash_key, list_keys, parse_expiry, read_keys, revoke_key, write_keys,
)

__all__ = [
    "AuditError", "AuditLog", "KeyRecord", "KeyStore", "VerifyResult", "audited", "create_key", "hash_key",
    "list_keys", "parse_expiry", "read_keys", "revoke_key", "verify", "write_keys",
]
