"""API key format and hashing. Keys look like `tk-<key_id>-<secret>`; only hashes are stored.

The key id is public (it names the row); the secret is 256 random bits, so a keyed SHA-256
(HMAC with the key id) is enough - no slow KDF needed for high-entropy secrets.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

PREFIX = "tk"
ADMIN_KEY_ID = "admin"


def new_key_id() -> str:
    return secrets.token_hex(6)


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def format_key(key_id: str, secret: str) -> str:
    return f"{PREFIX}-{key_id}-{secret}"


def parse_key(key: str) -> tuple[str, str] | None:
    """(key_id, secret) of a well-formed key, else None. The secret may itself contain '-'."""
    parts = key.split("-", 2)
    if len(parts) != 3 or parts[0] != PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def hash_secret(key_id: str, secret: str) -> str:
    return hmac.new(key_id.encode(), secret.encode(), hashlib.sha256).hexdigest()


def hash_admin_key(key: str) -> str:
    return hmac.new(b"tokenomy-admin", key.encode(), hashlib.sha256).hexdigest()


def same_hash(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def new_admin_key() -> str:
    return format_key(ADMIN_KEY_ID, new_secret())
