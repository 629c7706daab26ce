"""SQL for leads: one row per (bot, email), created race-free and updated under a row lock.

Two visitors (or two tabs) sending the same email at once must end with one contact and both changes:
the insert is ``INSERT ... ON CONFLICT (bot_id, email) DO NOTHING``, and whoever did not insert locks
the existing row (``SELECT ... FOR UPDATE`` on PostgreSQL; on SQLite the insert attempt already took the
database write lock) before merging into it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ragbot.db.models import Lead

__all__ = ["custom_keys", "get_lead", "insert_if_new", "iter_leads", "list_leads", "lock_lead"]


def insert_if_new(session: Session, values: dict[str, Any]) -> str | None:
    """Insert the lead unless the bot already has one with this email; the new id, or None."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        pg = pg_insert(Lead).values(**values).on_conflict_do_nothing(index_elements=["bot_id", "email"])
        new_id = session.execute(pg.returning(Lead.id)).scalar_one_or_none()
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        lite = sqlite_insert(Lead).values(**values).on_conflict_do_nothing(index_elements=["bot_id", "email"])
        new_id = session.execute(lite.returning(Lead.id)).scalar_one_or_none()
    else:
        raise NotImplementedError(f"ragbot supports SQLite and PostgreSQL, not {dialect}")
    return None if new_id is None else str(new_id)


def lock_lead(session: Session, bot_id: str, email: str) -> Lead | None:
    """The bot's lead for ``email``, locked until the transaction ends, with what is committed now."""
    query = select(Lead).where(Lead.bot_id == bot_id, Lead.email == email)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    return session.scalars(query.execution_options(populate_existing=True)).one_or_none()


def get_lead(session: Session, bot_id: str, lead_id: str) -> Lead | None:
    return session.scalars(select(Lead).where(Lead.bot_id == bot_id, Lead.id == lead_id)).one_or_none()


def list_leads(session: Session, bot_id: str, *, limit: int = 100) -> list[Lead]:
    """The newest contacts first."""
    query = (
        select(Lead)
        .where(Lead.bot_id == bot_id)
        .order_by(Lead.created_at.desc(), Lead.id.desc())
        .limit(limit)
    )
    return list(session.scalars(query))


def iter_leads(
    session: Session, bot_id: str, *, after: tuple[datetime, str] | None = None, limit: int = 500
) -> list[Lead]:
    """One page of contacts in creation order after the ``(created_at, id)`` cursor, for exports that
    read page by page (a short transaction each) instead of holding one open while a client downloads."""
    query = select(Lead).where(Lead.bot_id == bot_id)
    if after is not None:
        at, last_id = after
        query = query.where((Lead.created_at > at) | ((Lead.created_at == at) & (Lead.id > last_id)))
    return list(session.scalars(query.order_by(Lead.created_at, Lead.id).limit(limit)))


def custom_keys(session: Session, bot_id: str) -> list[str]:
    """Every custom field key the bot's leads have, sorted: the CSV columns, including keys of fields
    a form no longer has."""
    keys: set[str] = set()
    rows: Iterator[Any] = session.execute(
        select(Lead.custom).where(Lead.bot_id == bot_id).execution_options(yield_per=1000)
    )
    for (custom,) in rows:
        keys.update((custom or {}).keys())
    return sorted(keys)
