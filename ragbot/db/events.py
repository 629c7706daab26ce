"""SQL for a conversation's live events (``ConversationEvent``): appended in the transaction of the change
they report, read back in id order after a client's ``Last-Event-ID``."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ragbot.db.models import ConversationEvent, utcnow

__all__ = ["add_event", "events_after", "last_event_id"]


def add_event(
    session: Session,
    bot_id: str,
    conversation_id: str,
    type_: str,
    data: dict[str, Any],
    *,
    for_visitor: bool = True,
) -> ConversationEvent:
    event = ConversationEvent(
        bot_id=bot_id,
        conversation_id=conversation_id,
        type=type_,
        data=data,
        for_visitor=for_visitor,
        created_at=utcnow(),
    )
    session.add(event)
    session.flush()
    return event


def events_after(
    session: Session,
    bot_id: str,
    conversation_id: str,
    after_id: int,
    *,
    visitor_only: bool,
    limit: int = 200,
) -> list[ConversationEvent]:
    query = select(ConversationEvent).where(
        ConversationEvent.bot_id == bot_id,
        ConversationEvent.conversation_id == conversation_id,
        ConversationEvent.id > after_id,
    )
    if visitor_only:
        query = query.where(ConversationEvent.for_visitor.is_(True))
    return list(session.scalars(query.order_by(ConversationEvent.id).limit(limit)))


def last_event_id(session: Session, bot_id: str, conversation_id: str) -> int:
    query = (
        select(ConversationEvent.id)
        .where(ConversationEvent.bot_id == bot_id, ConversationEvent.conversation_id == conversation_id)
        .order_by(ConversationEvent.id.desc())
        .limit(1)
    )
    return int(session.scalar(query) or 0)
