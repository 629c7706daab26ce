"""Admin API keys: created (shown once), listed without their secret, revoked, expiring if asked."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from ragbot.db import bots as bots_sql
from ragbot.db import keys as keys_sql
from ragbot.db import repositories as repo
from ragbot.db.models import ApiKey, utcnow
from ragbot.db.session import session_scope
from ragbot.tenancy.keys import ADMIN_KEY_PREFIX, display_prefix, hash_key, new_admin_key
from ragbot.tenancy.principals import AdminPrincipal

__all__ = ["ApiKeyService", "KeyNotFoundError", "key_to_dict"]

#: ``last_used_at`` is written at most this often per key, so authenticating stays a read.
_TOUCH_EVERY = timedelta(minutes=1)


class KeyNotFoundError(LookupError):
    pass


def key_to_dict(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "bot_id": key.bot_id,
        "created_at": key.created_at,
        "expires_at": key.expires_at,
        "revoked_at": key.revoked_at,
        "last_used_at": key.last_used_at,
        "active": _active(key, utcnow()),
    }


def _active(key: ApiKey, now: datetime) -> bool:
    return key.revoked_at is None and (key.expires_at is None or key.expires_at > now)


class ApiKeyService:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def create(
        self, *, name: str = "", bot_id: str | None = None, expires_in: timedelta | None = None
    ) -> tuple[str, dict[str, Any]]:
        """A new key and its listing; the key itself is never retrievable again."""
        if expires_in is not None and expires_in <= timedelta(0):
            raise ValueError("a key's lifetime must be positive")
        key = new_admin_key()
        with session_scope(self._sessions) as s:
            if bot_id is not None and (not repo.is_storable(bot_id) or bots_sql.get_bot(s, bot_id) is None):
                raise LookupError(f"no bot with id {bot_id!r}")
            row = keys_sql.add_key(
                s,
                name=name,
                prefix=display_prefix(key),
                key_hash=hash_key(key),
                bot_id=bot_id,
                expires_at=utcnow() + expires_in if expires_in else None,
            )
            return key, key_to_dict(row)

    def list_keys(self, bot_id: str | None = None) -> list[dict[str, Any]]:
        with session_scope(self._sessions) as s:
            return [key_to_dict(k) for k in keys_sql.list_keys(s, bot_id)]

    def get(self, key_id: str) -> dict[str, Any] | None:
        with session_scope(self._sessions) as s:
            row = keys_sql.get_key(s, key_id) if repo.is_storable(key_id) else None
            return key_to_dict(row) if row else None

    def revoke(self, key_id: str) -> dict[str, Any]:
        with session_scope(self._sessions) as s:
            row = keys_sql.get_key(s, key_id) if repo.is_storable(key_id) else None
            if row is None:
                raise KeyNotFoundError(key_id)
            if row.revoked_at is None:
                row.revoked_at = utcnow()
            s.flush()
            return key_to_dict(row)

    def has_active_keys(self) -> bool:
        with session_scope(self._sessions) as s:
            return keys_sql.count_active_keys(s, utcnow()) > 0

    def authenticate(self, key: str) -> AdminPrincipal | None:
        """The principal behind a key, or None: unknown, revoked and expired keys look the same."""
        if not key.startswith(ADMIN_KEY_PREFIX) or not repo.is_storable(key) or len(key) > 200:
            return None
        now = utcnow()
        with session_scope(self._sessions) as s:
            row = keys_sql.get_key_by_hash(s, hash_key(key))
            if row is None or not _active(row, now):
                return None
            if row.last_used_at is None or now - row.last_used_at > _TOUCH_EVERY:
                row.last_used_at = now
            return AdminPrincipal(key_id=row.id, name=row.name, prefix=row.prefix, bot_id=row.bot_id)
