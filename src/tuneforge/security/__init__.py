"""Security: encryption at rest, API keys for serving, the audit log, and safe model loading (pickle-free weights, pinned digests, no stray code)."""

from tuneforge.security.at_rest import Sealer, decrypt_file, encrypt_file, read_file
from tuneforge.security.audit import AuditError, AuditLog, VerifyResult, audited, verify
from tuneforge.security.crypto import (
    DecryptError, Key, generate_key_file, is_encrypted,
)
from tuneforge.security.key_source import KeySource
from tuneforge.security.keys import (
    KeyRecord, KeyStore, create_key, hash_key, list_keys, parse_expiry, read_keys, revoke_key, write_keys,
)

__all__ = [
    "AuditError", "AuditLog", "DecryptError", "Key", "KeyRecord", "KeySource", "KeyStore", "Sealer", "VerifyResult", "audited",
    "create_key", "decrypt_file", "encrypt_file", "generate_key_file", "hash_key", "is_encrypted", "list_keys",
    "parse_expiry", "read_file", "read_keys", "revoke_key", "verify", "write_keys",
]
