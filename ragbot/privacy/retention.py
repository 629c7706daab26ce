"""Retention and erasure: what a bot keeps, for how long, and forgetting one person on request.

Deleting a conversation lets the database cascade to its messages, citations, retrieval logs, feedback,
live events and handoff events (foreign keys ``ON DELETE CASCADE`` on both SQLite and PostgreSQL); leads,
unanswered questions and the webhook outbox are deleted explicitly.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from ragbot.db.models import (
    Bot,
    Conversation,
    Feedback,
    Lead,
    Message,
    UnansweredQuestion,
    WebhookDelivery,
    utcnow,
)
from ragbot.db.session import session_scope

__all__ = ["forget_visitor", "purge_expired"]


def _count(session: Session, query: Any) -> int:
    return int(session.scalar(select(func.count()).select_from(query.subquery())) or 0)


def _delete_conversations(session: Session, bot_id: str, conversation_ids: list[str]) -> dict[str, int]:
    """Delete conversations (the database cascades to their rows); counts of what went, for the report."""
    if not conversation_ids:
        return {"conversations": 0, "messages": 0, "feedback": 0}
    messages = _count(
        session,
        select(Message.id).where(Message.bot_id == bot_id, Message.conversation_id.in_(conversation_ids)),
    )
    feedback = _count(
        session,
        select(Feedback.id).where(Feedback.bot_id == bot_id, Feedback.conversation_id.in_(conversation_ids)),
    )
    session.execute(
        delete(UnansweredQuestion).where(
            UnansweredQuestion.bot_id == bot_id, UnansweredQuestion.conversation_id.in_(conversation_ids)
        )
    )
    result = session.execute(
        delete(Conversation).where(Conversation.bot_id == bot_id, Conversation.id.in_(conversation_ids))
    )
    return {
        "conversations": int(getattr(result, "rowcount", 0) or 0),
        "messages": messages,
        "feedback": feedback,
    }


def _mentions(payload: Any, needles: set[str]) -> bool:
    text = json.dumps(payload, ensure_ascii=False, default=str).lower()
    return any(n.lower() in text for n in needles if n)


def purge_expired(sessions: sessionmaker[Session], now: datetime | None = None) -> dict[str, dict[str, int]]:
    """For every bot with ``retention_days``: delete conversations last active before the cut-off, leads
    and outbox deliveries older than it. Per bot, what was removed."""
    now = now or utcnow()
    report: dict[str, dict[str, int]] = {}
    with session_scope(sessions) as s:
        bots = [
            (b.id, b.retention_days) for b in s.scalars(select(Bot).where(Bot.retention_days.is_not(None)))
        ]
    for bot_id, days in bots:
        if not days:
            continue
        cutoff = now - timedelta(days=days)
        with session_scope(sessions) as s:
            old = list(
                s.scalars(
                    select(Conversation.id).where(
                        Conversation.bot_id == bot_id, Conversation.updated_at < cutoff
                    )
                )
            )
            removed = _delete_conversations(s, bot_id, old)
            leads = s.execute(delete(Lead).where(Lead.bot_id == bot_id, Lead.updated_at < cutoff))
            outbox = s.execute(
                delete(WebhookDelivery).where(
                    WebhookDelivery.bot_id == bot_id,
                    WebhookDelivery.created_at < cutoff,
                    WebhookDelivery.status != "pending",
                )
            )
            removed["leads"] = int(getattr(leads, "rowcount", 0) or 0)
            removed["webhook_deliveries"] = int(getattr(outbox, "rowcount", 0) or 0)
        if any(removed.values()):
            report[bot_id] = removed
    return report


def forget_visitor(sessions: sessionmaker[Session], bot_id: str, who: str) -> dict[str, int]:
    """Erase one person from a bot: ``who`` is a visitor id or an email. Their conversations (and all
    that hangs off them), their leads, their feedback elsewhere, and every webhook delivery that mentions
    them or their conversations. What was removed, by kind."""
    who = who.strip()
    if not who:
        raise ValueError("name a visitor id or an email")
    with session_scope(sessions) as s:
        visitor_ids = {who}
        emails: set[str] = set()
        if "@" in who:
            emails.add(who.lower())
            visitor_ids = set()
            for lead in s.scalars(
                select(Lead).where(Lead.bot_id == bot_id, func.lower(Lead.email) == who.lower())
            ):
                if lead.visitor_id:
                    visitor_ids.add(lead.visitor_id)
        else:
            for lead in s.scalars(select(Lead).where(Lead.bot_id == bot_id, Lead.visitor_id == who)):
                emails.add(lead.email.lower())
        conversations = list(
            s.scalars(
                select(Conversation.id).where(
                    Conversation.bot_id == bot_id, Conversation.visitor_id.in_(visitor_ids or {""})
                )
            )
        )
        lead_conversations = [
            c
            for c in s.scalars(
                select(Lead.conversation_id).where(
                    Lead.bot_id == bot_id, func.lower(Lead.email).in_(emails or {""})
                )
            )
            if c
        ]
        conversations = sorted(set(conversations) | set(lead_conversations))
        needles = visitor_ids | emails | set(conversations)
        deliveries = [
            d.id
            for d in s.scalars(select(WebhookDelivery).where(WebhookDelivery.bot_id == bot_id))
            if _mentions(d.payload, needles)
        ]
        removed_outbox = s.execute(delete(WebhookDelivery).where(WebhookDelivery.id.in_(deliveries or [""])))
        feedback_elsewhere = s.execute(
            delete(Feedback).where(Feedback.bot_id == bot_id, Feedback.rater.in_(visitor_ids or {""}))
        )
        removed = _delete_conversations(s, bot_id, conversations)
        leads = s.execute(
            delete(Lead).where(
                Lead.bot_id == bot_id,
                (func.lower(Lead.email).in_(emails or {""})) | (Lead.visitor_id.in_(visitor_ids or {""})),
            )
        )
        removed["feedback"] += int(getattr(feedback_elsewhere, "rowcount", 0) or 0)
        removed["leads"] = int(getattr(leads, "rowcount", 0) or 0)
        removed["webhook_deliveries"] = int(getattr(removed_outbox, "rowcount", 0) or 0)
        return removed
