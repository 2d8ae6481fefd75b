"""Security: API keys for serving, the audit log (more to come: encryption at rest, safe model loading)."""

from tuneforge.security.audit import AuditError, AuditLog, VerifyResult, audited, verify
from tuneforge.security.keys import (
    KeyRecord, KeyStore, create_key, hash_key, list_keys, read_keys, revoke_key, write_keys,
)

__all__ = [
    "AuditError", "AuditLog", "KeyRecord", "KeyStore", "VerifyResult", "audited", "create_key", "hash_key",
    "list_keys", "read_keys", "revoke_key", "verify", "write_keys",
]
