"""Secrets that name a caller: admin API keys (``rb_...``) and a bot's public widget key (``pk_...``).

Admin keys carry 256 random bits, so one SHA-256 (no salt, no slow hash) is enough to store them: nobody
can guess an input that hashes to a stored value, and a lookup by hash stays one indexed query.
"""

from __future__ import annotations

import hashlib
import secrets

__all__ = [
    "ADMIN_KEY_PREFIX",
    "PUBLIC_KEY_PREFIX",
    "display_prefix",
    "hash_key",
    "new_admin_key",
    "new_public_key",
]

ADMIN_KEY_PREFIX = "rb_"
PUBLIC_KEY_PREFIX = "pk_"


def new_admin_key() -> str:
    return ADMIN_KEY_PREFIX + secrets.token_urlsafe(32)


def new_public_key() -> str:
    return PUBLIC_KEY_PREFIX + secrets.token_urlsafe(18)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def display_prefix(key: str) -> str:
    """What lists show of a key so its owner recognises it: the type and the first few characters."""
    return key[:10]
