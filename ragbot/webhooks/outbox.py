"""Writing an event to the outbox, inside the caller's transaction.

A change and the webhook that reports it commit together or not at all: the delivery worker only ever
sends what was committed, and a crash between the two cannot lose or invent an event.
"""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ragbot.db.models import WebhookDelivery, WebhookSubscription, utcnow
from ragbot.observability.context import current_request_id

__all__ = ["EVENT_TYPES", "enqueue", "new_delivery_id"]

#: What a subscription can ask for.
EVENT_TYPES = (
    "handoff.requested",
    "handoff.claimed",
    "conversation.resolved",
    "message.created",
    "lead.created",
    "feedback.created",
)


def new_delivery_id() -> str:
    """The ``webhook-id`` receivers de-duplicate on: unique, and stable across retries and replays."""
    return "msg_" + secrets.token_urlsafe(18)


def enqueue(session: Session, bot_id: str, event_type: str, data: dict[str, Any]) -> list[str]:
    """One pending delivery per active subscription of the bot that wants ``event_type``; their ids.
    The body each receiver gets is ``{"type", "timestamp", "bot_id", "data"}``."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown webhook event {event_type!r}")
    subscriptions = session.scalars(
        select(WebhookSubscription).where(
            WebhookSubscription.bot_id == bot_id, WebhookSubscription.active.is_(True)
        )
    )
    now = utcnow()
    ids: list[str] = []
    for sub in subscriptions:
        if event_type not in (sub.events or []):
            continue
        delivery_id = new_delivery_id()
        payload = {"type": event_type, "timestamp": now.isoformat(), "bot_id": bot_id, "data": data}
        session.add(
            WebhookDelivery(
                id=delivery_id,
                bot_id=bot_id,
                subscription_id=sub.id,
                event_type=event_type,
                payload=payload,
                next_attempt_at=now,
                created_at=now,
                request_id=current_request_id(),
            )
        )
        ids.append(delivery_id)
    if ids:
        session.flush()
    return ids
