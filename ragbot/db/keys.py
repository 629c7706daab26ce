"""SQL for admin API keys (only their hashes)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from ragbot.db.models import ApiKey

__all__ = ["add_key", "count_active_keys", "get_key", "get_key_by_hash", "list_keys"]


def add_key(
    session: Session,
    *,
    name: str,
    prefix: str,
    key_hash: str,
    bot_id: str | None,
    expires_at: datetime | None,
) -> ApiKey:
    row = ApiKey(name=name[:200], prefix=prefix, key_hash=key_hash, bot_id=bot_id, expires_at=expires_at)
    session.add(row)
    session.flush()
    return row


def get_key(session: Session, key_id: str) -> ApiKey | None:
    return session.get(ApiKey, key_id)


def get_key_by_hash(session: Session, key_hash: str) -> ApiKey | None:
    return session.scalars(select(ApiKey).where(ApiKey.key_hash == key_hash)).one_or_none()


def list_keys(session: Session, bot_id: str | None = None) -> list[ApiKey]:
    """Every key, or the keys scoped to one bot."""
    query = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
    if bot_id is not None:
        query = query.where(ApiKey.bot_id == bot_id)
    return list(session.scalars(query))


def count_active_keys(session: Session, now: datetime) -> int:
    query = select(ApiKey).where(
        ApiKey.revoked_at.is_(None), (ApiKey.expires_at.is_(None)) | (ApiKey.expires_at > now)
    )
    return len(list(session.scalars(query)))
