"""SQL for bots: their settings row, its audit trail, and removing everything a bot owns."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from ragbot.db.models import (
    ApiKey,
    Bot,
    BotAuditEntry,
    CitationRow,
    Conversation,
    ConversationEvent,
    DocumentRow,
    Feedback,
    FusionCalibrationRow,
    HandoffEvent,
    IngestJob,
    JobFile,
    JobOutput,
    Lead,
    Message,
    RetrievalLog,
    Source,
    UnansweredQuestion,
    WebhookDelivery,
    WebhookSubscription,
    utcnow,
)

__all__ = [
    "add_audit",
    "delete_bot_rows",
    "get_bot",
    "get_bot_by_public_key",
    "list_audit",
    "list_bots",
]

#: Every table holding a bot's rows, children before parents, so deleting in this order breaks no key.
_OWNED_TABLES: tuple[type[Any], ...] = (
    WebhookDelivery,
    WebhookSubscription,
    Feedback,
    HandoffEvent,
    ConversationEvent,
    Lead,
    CitationRow,
    RetrievalLog,
    UnansweredQuestion,
    Message,
    Conversation,
    DocumentRow,
    Source,
    JobFile,
    JobOutput,
    IngestJob,
    FusionCalibrationRow,
    ApiKey,
)


def get_bot(session: Session, bot_id: str) -> Bot | None:
    return session.get(Bot, bot_id)


def get_bot_by_public_key(session: Session, public_key: str) -> Bot | None:
    return session.scalars(select(Bot).where(Bot.public_key == public_key)).one_or_none()


def list_bots(session: Session, bot_ids: list[str] | None = None) -> list[Bot]:
    """Every bot, or only those named (a scoped key sees its own)."""
    query = select(Bot).order_by(Bot.created_at, Bot.id)
    if bot_ids is not None:
        query = query.where(Bot.id.in_(bot_ids))
    return list(session.scalars(query))


def add_audit(session: Session, bot_id: str, action: str, actor: str, changes: dict[str, Any]) -> None:
    session.add(BotAuditEntry(bot_id=bot_id, action=action, actor=actor[:200], changes=changes, at=utcnow()))


def list_audit(session: Session, bot_id: str, limit: int = 100) -> list[BotAuditEntry]:
    query = (
        select(BotAuditEntry)
        .where(BotAuditEntry.bot_id == bot_id)
        .order_by(BotAuditEntry.at.desc(), BotAuditEntry.id)
        .limit(limit)
    )
    return list(session.scalars(query))


def delete_bot_rows(session: Session, bot_id: str) -> dict[str, int]:
    """Delete the bot and every row it owns; how many rows of each table went."""
    removed: dict[str, int] = {}
    for model in _OWNED_TABLES:
        result = session.execute(delete(model).where(model.bot_id == bot_id))
        removed[model.__tablename__] = int(getattr(result, "rowcount", 0) or 0)
    result = session.execute(delete(Bot).where(Bot.id == bot_id))
    removed["bots"] = int(getattr(result, "rowcount", 0) or 0)
    return removed
